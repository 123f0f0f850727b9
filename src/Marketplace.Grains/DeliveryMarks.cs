namespace Marketplace.Grains;

/// <summary>The highest delivery a grain applied from one sender, and when it saw that sender last.</summary>
[GenerateSerializer, Alias("mk.state.DeliveryMark")]
public sealed class DeliveryMark
{
    [Id(0)] public long Sequence { get; set; }
    [Id(1)] public DateTimeOffset SeenAt { get; set; }
}

/// <summary>
/// What a grain remembers of the settlement deliveries it applied: per sender, the highest sequence number. Kept in the
/// grain's stored state, so a delivery whose effect was stored is recognised after a restart too, and one whose effect
/// was lost with its activation is applied again.
/// </summary>
public static class DeliveryMarks
{
    /// <summary>How long a silent sender is remembered; far above how long a sender resends a delivery.</summary>
    public static readonly TimeSpan Retention = TimeSpan.FromHours(1);

    private const int PruneAbove = 32;

    /// <summary>True when the delivery is new (and is now remembered); false for one applied before.</summary>
    public static bool TryAccept(Dictionary<Guid, DeliveryMark> marks, DeliveryId? delivery, DateTimeOffset now)
    {
        if (delivery is not { } id)
        {
            return true;
        }

        if (marks.TryGetValue(id.Sender, out var mark))
        {
            if (id.Sequence <= mark.Sequence)
            {
                mark.SeenAt = now;
                return false;
            }

            mark.Sequence = id.Sequence;
            mark.SeenAt = now;
            return true;
        }

        if (marks.Count >= PruneAbove)
        {
            foreach (var (sender, old) in marks)
            {
                if (now - old.SeenAt > Retention)
                {
                    marks.Remove(sender);
                }
            }
        }

        marks[id.Sender] = new DeliveryMark { Sequence = id.Sequence, SeenAt = now };
        return true;
    }

    /// <summary>
    /// Seeds <paramref name="marks"/> with what a journal read holds: each sender's last committed batch number. Deliveries
    /// of those batches (or earlier ones) are then recognised as already counted.
    /// </summary>
    public static void Seed(Dictionary<Guid, DeliveryMark> marks, IReadOnlyDictionary<Guid, long> senders, DateTimeOffset now)
    {
        marks.Clear();
        foreach (var (sender, sequence) in senders)
        {
            marks[sender] = new DeliveryMark { Sequence = sequence, SeenAt = now };
        }
    }

    /// <summary>Merges the marks another activation stored into this one's: the higher sequence per sender.</summary>
    public static void Merge(Dictionary<Guid, DeliveryMark> target, Dictionary<Guid, DeliveryMark> stored)
    {
        foreach (var (sender, theirs) in stored)
        {
            if (!target.TryGetValue(sender, out var ours))
            {
                target[sender] = new DeliveryMark { Sequence = theirs.Sequence, SeenAt = theirs.SeenAt };
            }
            else if (theirs.Sequence > ours.Sequence)
            {
                ours.Sequence = theirs.Sequence;
                ours.SeenAt = theirs.SeenAt > ours.SeenAt ? theirs.SeenAt : ours.SeenAt;
            }
        }
    }
}
