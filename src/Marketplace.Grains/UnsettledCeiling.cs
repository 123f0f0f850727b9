namespace Marketplace.Grains;

/// <summary>
/// A key's stored bound on the calls its activations counted into its quotas and have not seen settled (the "ceiling"):
/// raised, and written durably, before an admission takes those calls past it; lowered lazily, with the next write-behind.
/// </summary>
/// <remarks>
/// <para>A key's quota counts live in its activation's memory. An activation that went away (its silo killed, or deactivated
/// during a rolling restart) may have counted calls the journal does not hold yet: in flight, in a front door's unflushed
/// batch, or still spendable from a front door's lease. The next activation rebuilds its counts from the journal and would
/// not see them; it withholds the stored ceiling instead (<see cref="WithheldCalls"/>), which is at least their number because
/// no admission returns before the ceiling covering it is stored.</para>
/// <para>Raising writes the state at once and waits for it; lowering never needs to (a higher stored value only withholds
/// more), so it is left to the write-behind. A raise goes to twice the activation's own unsettled calls (and at least
/// <see cref="Headroom"/> more), so a key ramping up to n unsettled calls writes about log2(n / 64) + 1 times. The count
/// swings widely under leases (a front door's lease adds up to a thousand calls at once and gives back what it did not
/// spend a second later), so the ceiling is lowered only when the highest count of the last <see cref="LowerAfter"/> and
/// more is below a quarter of it, and then to twice that: a key at a steady load, however uneven, writes nothing, and one
/// whose load went down writes once a minute at most. What the activation withholds for earlier ones only ever shrinks, so
/// it is covered as it is, never doubled: a key whose silos keep dying does not see its ceiling grow with each death.</para>
/// <para>The grain is reentrant: admissions that need a raise while one is being written wait for that one (and raise again
/// only if it is not enough).</para>
/// <para>Availability comes first when the database is slow or away (its outage also stalls settlements, so the unsettled
/// calls grow while it lasts): an admission waits at most <see cref="WriteWait"/> for a raise, and one that failed is tried
/// again at most once per <see cref="RetryAfter"/>; meanwhile admissions go on and the raised value stays in memory, written
/// behind. Only the loss of the activation before that write lands (a second fault during the database's) can then let a
/// quota be passed, by at most what the unsettled calls grew past the stored ceiling; <paramref name="unstored"/> reports
/// each such admission's raise.</para>
/// </remarks>
public sealed class UnsettledCeiling(Func<long> read, Action<long> write, Func<Task> saveNow, Action saveLater, TimeProvider time,
    Action<long, string>? unstored = null)
{
    /// <summary>The longest an admission waits for a raise to be stored.</summary>
    public static readonly TimeSpan WriteWait = TimeSpan.FromMilliseconds(250);

    /// <summary>How long after a failed raise admissions go on without trying another.</summary>
    public static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(1);

    /// <summary>Calls a raise adds at least beyond what is needed, and the lowest a ceiling is lowered to while in use.</summary>
    public const long Headroom = 64;

    /// <summary>How long the unsettled calls stay below a quarter of the ceiling, at least, before it is lowered.</summary>
    public static readonly TimeSpan LowerAfter = TimeSpan.FromMinutes(1);

    // The stored ceiling is at least this: set from what the activation read, raised once a raise is durable, lowered as soon
    // as the value in memory is (the stored one is then either the old, higher one or the new one).
    private long _durable;
    private Task<bool>? _raising;
    private DateTimeOffset _raisingSince;
    private DateTimeOffset _failedAt = DateTimeOffset.MinValue;

    // The highest count of unsettled calls seen in the current period of LowerAfter, and in the one before it.
    private long _peak;
    private long _previousPeak;
    private DateTimeOffset _peakSince = time.GetUtcNow();

    /// <summary>What the stored state holds at least.</summary>
    public long Durable => _durable;

    /// <summary>The activation read <paramref name="stored"/> from storage.</summary>
    public void Loaded(long stored) => _durable = stored;

    /// <summary>
    /// Returns once the stored ceiling covers what <paramref name="covered"/> says (read again after every wait): the
    /// activation's unsettled calls and what it withholds. Raises it and waits for the write when it does not, for at most
    /// <see cref="WriteWait"/>; returns without it when the write is slower, failed, or failed less than
    /// <see cref="RetryAfter"/> ago (see the remarks).
    /// </summary>
    public async ValueTask EnsureAsync(Func<(long Unsettled, long Withheld)> covered)
    {
        var now = covered();
        Note(now.Unsettled);
        while (Total(now) > _durable)
        {
            var at = time.GetUtcNow();
            if (_raising is { IsCompleted: true })
            {
                _raising = null;
            }

            if (_raising is null && at - _failedAt < RetryAfter)
            {
                Unstored(now, "the last raise failed");
                return;
            }

            if (_raising is null)
            {
                _raisingSince = at;
                _raising = RaiseAsync(now);
            }

            var raising = _raising;
            var left = WriteWait - (at - _raisingSince);
            if (!raising.IsCompleted && (left <= TimeSpan.Zero || await Task.WhenAny(raising, Task.Delay(left, time)) != raising))
            {
                Unstored(now, $"not stored within {WriteWait.TotalMilliseconds} ms");
                return;
            }

            if (!await raising)
            {
                Unstored(now, "the write failed");
                return;
            }

            now = covered();
            Note(now.Unsettled);
        }
    }

    // Admitting without the raise stored: the raised value stays in memory and goes with the next write-behind.
    private void Unstored((long Unsettled, long Withheld) covered, string reason)
    {
        if (read() < Total(covered))
        {
            write(covered.Withheld + Math.Max(2 * covered.Unsettled, covered.Unsettled + Headroom));
        }

        saveLater();
        unstored?.Invoke(read(), reason);
    }

    /// <summary>
    /// Lowers the ceiling in memory when the unsettled calls have stayed far below it for a while; stored with the next
    /// write-behind. True when it is still above what a key without unsettled calls needs (worth looking at again later).
    /// </summary>
    public bool Relax(long unsettled, long withheld)
    {
        Note(unsettled);
        var above = read() - withheld;
        var recent = Math.Max(_peak, _previousPeak);
        if (!Raising && above > Headroom && recent < above / 4)
        {
            Lower(withheld + Math.Max(2 * recent, Headroom));
            saveLater();
        }

        return read() - withheld > Headroom;
    }

    /// <summary>
    /// Lowers the ceiling to exactly <paramref name="covered"/> and writes it: for an activation that is going away, so the
    /// next one withholds only what is really unsettled. A failed write leaves the stored value higher, which is safe.
    /// </summary>
    public async Task SettleAsync(long covered)
    {
        if (Raising || covered >= read())
        {
            return;
        }

        Lower(covered);
        await saveNow();
    }

    private static long Total((long Unsettled, long Withheld) covered) => covered.Unsettled + covered.Withheld;

    private void Note(long unsettled)
    {
        var now = time.GetUtcNow();
        if (now - _peakSince >= LowerAfter)
        {
            // A period with no call at all (nothing noted for two of them) had no calls unsettled beyond the current count.
            _previousPeak = now - _peakSince >= 2 * LowerAfter ? 0 : _peak;
            _peak = 0;
            _peakSince = now;
        }

        _peak = Math.Max(_peak, unsettled);
    }

    private void Lower(long value)
    {
        write(value);
        _durable = Math.Min(_durable, value);
    }

    // True once the raise is stored; false when the write failed (the value stays raised in memory, written behind).
    private async Task<bool> RaiseAsync((long Unsettled, long Withheld) covered)
    {
        var target = Math.Max(read(), covered.Withheld + Math.Max(2 * covered.Unsettled, covered.Unsettled + Headroom));
        write(target);
        try
        {
            await saveNow();
            _durable = Math.Max(_durable, target);
            return true;
        }
        catch (Exception)
        {
            _failedAt = time.GetUtcNow();
            saveLater();
            return false;
        }
    }

    private bool Raising => _raising is { IsCompleted: false };
}
