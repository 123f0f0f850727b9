namespace Marketplace.Grains;

/// <summary>
/// The calls one key activation counted into its quotas (held for an admission, or granted) and has not yet seen settled or
/// given back: what its stored ceiling must cover (<see cref="UnsettledCeiling"/>).
/// </summary>
/// <remarks>
/// <para>Settlements say which activation admitted their calls (by its epoch), but not when; and some say neither (batches
/// fetched from the journal, senders that name no epoch, deliveries given up after their resend window). So the count is
/// kept in two generations of <c>horizon</c> each, and a call is taken off the oldest one first. Every call counted more than
/// a horizon ago has settled or will never be spent (<see cref="WithheldCalls.Horizon"/>), so a generation that old is
/// dropped whole: what a settlement never took off is forgotten rather than withheld for ever, and no call that could still
/// settle is dropped (taking calls off the oldest generation first only ever leaves the newer one too high).</para>
/// <para>Calls given back name the generation that counted them; one that has been dropped already takes nothing off.</para>
/// </remarks>
public sealed class UnsettledCalls(TimeSpan horizon, DateTimeOffset now)
{
    private long _older;
    private long _newer;
    private long _generation;
    private DateTimeOffset _newerSince = now;

    /// <summary>The calls counted and not yet settled or given back, as of the last call that named the time.</summary>
    public long Count => _older + _newer;

    /// <summary>Counts <paramref name="calls"/>; returns the generation they were counted in (for <see cref="GiveBack"/>).</summary>
    public long Add(long calls, DateTimeOffset now)
    {
        Rotate(now);
        _newer += calls;
        return _generation;
    }

    /// <summary>Takes off calls that settled (whenever they were counted).</summary>
    public void Settle(long calls, DateTimeOffset now)
    {
        Rotate(now);
        TakeOff(calls);
    }

    /// <summary>Takes off calls counted in <paramref name="generation"/> that will never be spent (an allowance given back).</summary>
    public void GiveBack(long calls, long generation, DateTimeOffset now)
    {
        Rotate(now);
        if (generation >= _generation - 1)
        {
            TakeOff(calls);
        }
    }

    /// <summary>Drops the generations older than a horizon; returns the count.</summary>
    public long CountAt(DateTimeOffset now)
    {
        Rotate(now);
        return Count;
    }

    private void TakeOff(long calls)
    {
        if (calls <= 0)
        {
            return;
        }

        var fromOlder = Math.Min(calls, _older);
        _older -= fromOlder;
        _newer = Math.Max(0, _newer - (calls - fromOlder));
    }

    // The older generation holds calls counted before _newerSince; once a horizon has passed since then, they have all settled.
    private void Rotate(DateTimeOffset now)
    {
        if (now - _newerSince < horizon)
        {
            return;
        }

        if (now - _newerSince >= 2 * horizon)
        {
            // No call came for over a horizon (one would have rotated the generations), so the newer generation has settled too.
            (_older, _newer) = (0, 0);
            _generation += 2;
        }
        else
        {
            (_older, _newer) = (_newer, 0);
            _generation++;
        }

        _newerSince = now;
    }
}
