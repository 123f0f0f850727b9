namespace Marketplace.Grains;

/// <summary>
/// What the journal (the call log) holds for one grain: the totals its committed batches added, and how far each sender's
/// batches are committed. Accounts, keys and data services rebuild their counters from it when they activate, so their
/// state need not be written per call.
/// </summary>
/// <remarks>
/// Each read is one snapshot: the totals include exactly the batches up to each sender's number in <c>Senders</c>. A
/// settled call reaches its grains only after its batch committed, named by the batch (<see cref="DeliveryId"/>: sender and
/// batch number), so a grain that seeds its delivery marks with <c>Senders</c> applies exactly the batches its totals miss.
/// </remarks>
public interface IJournalReader
{
    /// <summary>The account's totals, its calls in the UTC month that holds <paramref name="now"/>, and its calls per service.</summary>
    /// <param name="keyIds">The account's keys: its calls per service are the sum of theirs.</param>
    ValueTask<AccountJournal> ReadAccountAsync(string accountId, IReadOnlyCollection<string> keyIds, DateTimeOffset now);

    /// <summary>The key's totals per service, with its calls in the latest day and month the journal counted for it.</summary>
    ValueTask<KeyJournal> ReadKeyAsync(string keyId);

    /// <summary>The data service's totals.</summary>
    ValueTask<ServiceJournal> ReadServiceAsync(string serviceId);

    /// <summary>
    /// The settled calls of <paramref name="sender"/>'s batches numbered above <paramref name="after"/>, per batch, key and
    /// service, in batch order: of the key <paramref name="keyId"/>, or of every key of the account <paramref name="accountId"/>.
    /// What a grain fetches when the sender (a process) went away before its settlements reached the grain; batches stay
    /// fetchable for an hour after their commit (migration 0011).
    /// </summary>
    ValueTask<IReadOnlyList<JournalBatchUsage>> ReadBatchesAsync(Guid sender, long after, string? keyId, string? accountId);
}

/// <summary>A key's settled calls to one service in one journal batch of a sender.</summary>
public sealed record JournalBatchUsage(Guid Sender, long Sequence, string KeyId, string AccountId, ServiceUsageDelta Usage);

/// <summary>Settled calls as the journal adds them up (migration 0007 defines what each counts).</summary>
[GenerateSerializer, Immutable, Alias("mk.JournalCounts")]
public sealed record JournalCounts(
    [property: Id(0)] long Calls,
    [property: Id(1)] long ChargedCalls,
    [property: Id(2)] long Failed,
    [property: Id(3)] long Charged)
{
    /// <summary>No calls.</summary>
    public static JournalCounts Zero { get; } = new(0, 0, 0, 0);

    /// <summary>The sum of two counts.</summary>
    public JournalCounts Add(JournalCounts other) =>
        new(Calls + other.Calls, ChargedCalls + other.ChargedCalls, Failed + other.Failed, Charged + other.Charged);
}

/// <summary>An account in the journal.</summary>
/// <param name="CallsThisMonth">Settled calls in the UTC month that holds the read's <c>now</c> (what a monthly call cap counts).</param>
/// <param name="CallsByService">Settled calls per service, over the keys the read named.</param>
/// <param name="Senders">Each recently active sender's last committed batch number.</param>
public sealed record AccountJournal(
    JournalCounts Totals,
    long CallsThisMonth,
    IReadOnlyDictionary<string, long> CallsByService,
    IReadOnlyDictionary<Guid, long> Senders);

/// <summary>A key's calls to one service in the journal.</summary>
/// <param name="Day">The latest quota day (in the key's window offset, <see cref="JournalWindows"/>) with calls.</param>
/// <param name="DayCalls">Settled calls in <paramref name="Day"/>.</param>
/// <param name="Month">The first day of the latest quota month with calls.</param>
/// <param name="MonthCalls">Settled calls in that month.</param>
public sealed record KeyServiceJournal(
    string ServiceId,
    JournalCounts Totals,
    DateOnly Day,
    long DayCalls,
    DateOnly Month,
    long MonthCalls);

/// <summary>A key in the journal.</summary>
public sealed record KeyJournal(IReadOnlyList<KeyServiceJournal> Services, IReadOnlyDictionary<Guid, long> Senders);

/// <summary>A data service in the journal.</summary>
public sealed record ServiceJournal(JournalCounts Totals, IReadOnlyDictionary<Guid, long> Senders);

/// <summary>The quota days and months the journal counts calls in, the same way the key grain counts them.</summary>
public static class JournalWindows
{
    /// <summary>How long a sender that commits nothing is still named in reads: far above how long a delivery is resent.</summary>
    public static readonly TimeSpan SenderRetention = TimeSpan.FromMinutes(15);

    /// <summary>The key's quota day of a call at <paramref name="at"/>, for a key whose windows start <paramref name="offsetMinutes"/> from UTC.</summary>
    public static DateOnly Day(DateTimeOffset at, int offsetMinutes) =>
        DateOnly.FromDateTime(at.ToOffset(TimeSpan.FromMinutes(offsetMinutes)).DateTime);

    /// <summary>The first day of the key's quota month of a call at <paramref name="at"/>.</summary>
    public static DateOnly Month(DateTimeOffset at, int offsetMinutes)
    {
        var day = Day(at, offsetMinutes);
        return new DateOnly(day.Year, day.Month, 1);
    }

    /// <summary>The first day of the UTC month of <paramref name="at"/> (an account's monthly call cap).</summary>
    public static DateOnly UtcMonth(DateTimeOffset at) => Month(at, 0);
}
