namespace Marketplace.Grains;

/// <summary>
/// What a key activation withholds from its quotas for the activations before it: calls they may have admitted that the
/// journal did not hold when this one read it, so its counts miss them. It starts at the stored ceiling
/// (<see cref="UnsettledCeiling"/>), which covers them, and shrinks exactly as they are confirmed, once each:
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>a settlement of another activation's calls that the journal read did not hold: its calls join the quota counts and
/// leave what is withheld;</item>
/// <item>a settlement of another activation's calls that the journal read held already (its sequence is at or below the
/// sender's mark in that read): its calls were counted, they only leave what is withheld, once per delivery, and not at all
/// when it was sent before unanswered (the activation that went away may have taken them off its count already);</item>
/// <item>a report of another activation's lease: its unspent calls will never be spent (once per lease, and not when resent).</item>
/// </list>
/// It ends at <see cref="Horizon"/> after the activation started, when every call those activations admitted has settled.
/// Only quota windows that were current when the activation started are concerned: their calls were admitted before it.
/// </remarks>
public sealed class WithheldCalls(long calls, IReadOnlyDictionary<Guid, long> seeded, DateTimeOffset since, TimeSpan horizon)
{
    // Per sender, the highest delivery at or below its mark in the journal read whose calls were taken off (a resend of it
    // takes nothing off again). Kept apart from the delivery marks, which advance with every delivery applied.
    private readonly Dictionary<Guid, long> _confirmedSeeded = [];
    private readonly HashSet<(long Epoch, long LeaseId)> _reported = [];

    /// <summary>
    /// How long after an activation starts every call an earlier activation admitted has settled. A lease's calls start within
    /// <see cref="LeaseOptions.Lifetime"/> of its grant. From there, <see cref="MeteringOptions.ReservationTimeout"/> is the
    /// bound the marketplace already states for a call to end and its settlement to arrive: it must exceed the longest call a
    /// service allows (its timeout times its attempts, at most 120 s × 6, the bound an Idempotency-Key claim holds per service)
    /// plus the journal's interval, its default of 15 minutes leaves more than the minute a settlement is resent for, and past
    /// it the account already gives a call's money back unasked. The key cannot know which services its outstanding calls went
    /// to, so it takes that cluster-wide bound rather than a service's own. A call settling later (the database away for
    /// longer) still joins the counts when it arrives, but is no longer withheld meanwhile.
    /// </summary>
    public static TimeSpan Horizon(LeaseOptions leases, MeteringOptions metering) => leases.Lifetime + metering.ReservationTimeout;

    /// <summary>Nothing withheld (a new key, or one whose previous activation left nothing unsettled).</summary>
    public static WithheldCalls None(DateTimeOffset since) => new(0, new Dictionary<Guid, long>(), since, TimeSpan.Zero);

    /// <summary>The calls still withheld.</summary>
    public long Remaining { get; private set; } = Math.Max(0, calls);

    /// <summary>When the activation started: windows that started after it are not concerned.</summary>
    public DateTimeOffset Since { get; } = since;

    /// <summary>When what is left is given up (every call it stands for has settled).</summary>
    public DateTimeOffset EndsAt { get; } = since + horizon;

    /// <summary>True for a quota window that was current when the activation started (it may miss earlier activations' calls).</summary>
    public bool Concerns(DateTimeOffset windowStart) => windowStart <= Since;

    /// <summary>What a quota count of the window starting at <paramref name="windowStart"/> must add.</summary>
    public long For(DateTimeOffset windowStart) => Concerns(windowStart) ? Remaining : 0;

    /// <summary>Takes confirmed calls off; true when that ends what is withheld.</summary>
    public bool Confirm(long confirmed)
    {
        if (Remaining == 0 || confirmed <= 0)
        {
            return false;
        }

        Remaining = Math.Max(0, Remaining - confirmed);
        if (Remaining > 0)
        {
            return false;
        }

        Forget();
        return true;
    }

    /// <summary>
    /// True when <paramref name="delivery"/>, refused by the delivery marks, is one the journal read held already and is seen
    /// here for the first time: its calls are counted and may leave what is withheld (now remembered).
    /// </summary>
    public bool FirstOfSeeded(DeliveryId delivery)
    {
        if (Remaining == 0 || !seeded.TryGetValue(delivery.Sender, out var mark) || delivery.Sequence > mark
            || (_confirmedSeeded.TryGetValue(delivery.Sender, out var confirmed) && delivery.Sequence <= confirmed))
        {
            return false;
        }

        _confirmedSeeded[delivery.Sender] = delivery.Sequence;
        return true;
    }

    /// <summary>True the first time a lease of another activation is reported here (now remembered).</summary>
    public bool FirstReport(long epoch, long leaseId) => Remaining > 0 && _reported.Add((epoch, leaseId));

    /// <summary>Gives up what is left once the horizon has passed; true when that ended something.</summary>
    public bool Expire(DateTimeOffset now)
    {
        if (Remaining == 0 || now < EndsAt)
        {
            return false;
        }

        Remaining = 0;
        Forget();
        return true;
    }

    private void Forget()
    {
        _confirmedSeeded.Clear();
        _reported.Clear();
    }
}
