namespace Marketplace;

/// <summary>What an admin sends to open a consumer account.</summary>
/// <param name="CreditLimit">How far below zero the balance may go, in minor units (0 = strictly prepaid).</param>
[GenerateSerializer, Immutable, Alias("mk.AccountSpec")]
/// <param name="MonthlyCallCap">Most calls all of the account's keys together may make per UTC month; null = no cap.</param>
public sealed record AccountSpec(
    [property: Id(0)] string Name,
    [property: Id(1)] string Currency,
    [property: Id(2)] long CreditLimit,
    [property: Id(3)] long? MonthlyCallCap = null);

/// <summary>A consumer's prepaid account. Money is in integer minor units of <see cref="Currency"/>.</summary>
/// <param name="Balance">Committed balance: top-ups minus charges.</param>
/// <param name="Reserved">Prices held for calls in flight.</param>
/// <param name="Available">What new calls may still spend: Balance - Reserved + CreditLimit.</param>
/// <param name="Credits">Every top-up and adjustment added up: the balance is this minus the journal's charges.</param>
/// <param name="Withheld">Part of <paramref name="Reserved"/>: the most the account's previous activation may still have held
/// (its grain moved or its silo died), released as settlements name it, the rest after 1.1 × Metering:ReservationTimeout.</param>
[GenerateSerializer, Immutable, Alias("mk.AccountInfo")]
public sealed record AccountInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] string Currency,
    [property: Id(3)] long Balance,
    [property: Id(4)] long Reserved,
    [property: Id(5)] long CreditLimit,
    [property: Id(6)] long Available,
    [property: Id(7)] long TotalToppedUp,
    [property: Id(8)] long TotalCharged,
    [property: Id(9)] UsageCounters Usage,
    [property: Id(10)] IReadOnlyList<string> KeyIds,
    [property: Id(11)] DateTimeOffset CreatedAt,
    [property: Id(12)] long? MonthlyCallCap = null,
    [property: Id(13)] long CallsThisMonth = 0,
    [property: Id(14)] long Credits = 0,
    [property: Id(15)] long Withheld = 0);

/// <summary>Call counts: in total and per data service.</summary>
[GenerateSerializer, Immutable, Alias("mk.UsageCounters")]
public sealed record UsageCounters(
    [property: Id(0)] long Calls,
    [property: Id(1)] long Charged,
    [property: Id(2)] long Failed,
    [property: Id(3)] IReadOnlyDictionary<string, long> CallsByService);

/// <summary>The answer to a reservation: granted, or refused with what is available.</summary>
/// <param name="Hold">The account's hold that carries the reserved amount; its settlement names it again.</param>
[GenerateSerializer, Immutable, Alias("mk.Reservation")]
public sealed record Reservation(
    [property: Id(0)] bool Granted,
    [property: Id(1)] long Available,
    [property: Id(2)] string Currency,
    [property: Id(3)] bool CapReached = false,
    [property: Id(4)] long Hold = 0);

/// <summary>One consumer account: the single writer of its balance, however many keys spend it.</summary>
[Alias("mk.IAccountGrain")]
public interface IAccountGrain : IGrainWithStringKey
{
    /// <summary>Opens the account; fails if it exists with another currency.</summary>
    [Alias("CreateAsync")]
    Task<AccountInfo> CreateAsync(AccountSpec spec);

    /// <summary>The account, or null when it was never opened.</summary>
    [Alias("GetAsync")]
    Task<AccountInfo?> GetAsync();

    /// <summary>
    /// Adds money (positive amount) and records the reason; written durably before it returns. Each call is a new
    /// change: a caller that may repeat it (its outcome unknown) uses <see cref="ChangeCreditsAsync"/> with an id.
    /// </summary>
    [Alias("TopUpAsync")]
    Task<AccountInfo> TopUpAsync(long amount, string reason);

    /// <summary>
    /// Applies a top-up or an adjustment once per <see cref="BalanceChange.OperationId"/>: a repeat of an applied change
    /// (a resend after a lost answer) is answered <see cref="BalanceChangeStatus.Replayed"/> and changes nothing, and the
    /// same id with another kind, amount or reason is <see cref="BalanceChangeStatus.Mismatch"/>. Ids are remembered
    /// with the account's ledger (its last 1,000 changes), for <see cref="BalanceChange.Window"/> at most.
    /// </summary>
    [Alias("ChangeCreditsAsync")]
    Task<BalanceChangeResult> ChangeCreditsAsync(BalanceChange change);

    /// <summary>Holds <paramref name="amount"/> for a call, unless that would take the balance below the credit limit.</summary>
    [Alias("ReserveAsync")]
    ValueTask<Reservation> ReserveAsync(long amount);

    /// <summary>
    /// Reserves <see cref="LeaseRequest.Amount"/> for a call like <see cref="ReserveAsync"/>, takes back the key's unused
    /// lease, and may lease the key extra allowance (while the balance is far above what is leased) so its next calls need
    /// no message to the account. When the price is not covered but other keys hold leases, the answer asks to retry and
    /// the leases are recalled: refusals are only final once nothing is leased, so the count of admitted calls stays exact.
    /// </summary>
    [Alias("ReserveWithLeaseAsync")]
    ValueTask<LeaseGrant> ReserveWithLeaseAsync(LeaseRequest request);

    /// <summary>
    /// Gives back what is left of a key's lease, by the hold each part was made in; <paramref name="seen"/> is as in
    /// <see cref="LeaseRequest.Seen"/>. Answered, so the key knows when what it handed back has arrived; sent again with the
    /// same <paramref name="request"/> id until it is, and applied once.
    /// </summary>
    [Alias("ReturnLeaseAsync")]
    Task ReturnLeaseAsync(string keyId, IReadOnlyList<HoldRelease> lease, long seen, RequestId? request = null);

    /// <summary>
    /// Settles many calls at once (what a front door collected over a few milliseconds). Answered, so that a batch a
    /// stopping silo refused (never applied) is sent again rather than lost.
    /// </summary>
    [Alias("SettleBatchAsync")]
    Task SettleBatchAsync(SettlementBatch batch);

    /// <summary>
    /// Applies the journal batches of <paramref name="sender"/> that this account never received (the sender went away
    /// between its commit and its settlements), each once. A key asks for it when it takes back a silent sender's lease.
    /// </summary>
    [Alias("FetchUndeliveredAsync")]
    Task FetchUndeliveredAsync(Guid sender);

    /// <summary>Remembers that a key belongs to this account.</summary>
    [Alias("AttachKeyAsync")]
    Task AttachKeyAsync(string keyId);

    /// <summary>Forgets a deleted key.</summary>
    [Alias("DetachKeyAsync")]
    Task DetachKeyAsync(string keyId);

    /// <summary>Corrects the balance by a signed amount with a reason (audited); refused if it would pass the credit limit.</summary>
    [Alias("AdjustAsync")]
    Task<AccountInfo> AdjustAsync(long amount, string reason);

    /// <summary>The audited balance changes, newest last.</summary>
    [Alias("GetLedgerAsync")]
    Task<IReadOnlyList<LedgerEntry>> GetLedgerAsync();
}

/// <summary>An audited change of balance by an admin.</summary>
[GenerateSerializer, Immutable, Alias("mk.LedgerEntry")]
public sealed record LedgerEntry(
    [property: Id(0)] DateTimeOffset At,
    [property: Id(1)] long Amount,
    [property: Id(2)] string Reason,
    [property: Id(3)] long BalanceAfter,
    [property: Id(4)] string? OperationId = null);

/// <summary>Whether a <see cref="BalanceChange"/> adds money paid in or corrects the balance.</summary>
public enum BalanceChangeKind
{
    /// <summary>Money paid in (positive; counted in <see cref="AccountInfo.TotalToppedUp"/>).</summary>
    TopUp = 0,

    /// <summary>A signed correction, refused when it would take the balance below the credit limit.</summary>
    Adjustment = 1,
}

/// <summary>A top-up or adjustment named by the id its sender repeats it with until it knows the outcome.</summary>
/// <param name="OperationId">The sender's id for this change (an HTTP caller's Idempotency-Key, or one made up per request).</param>
[GenerateSerializer, Immutable, Alias("mk.BalanceChange")]
public sealed record BalanceChange(
    [property: Id(0)] BalanceChangeKind Kind,
    [property: Id(1)] long Amount,
    [property: Id(2)] string Reason,
    [property: Id(3)] string OperationId)
{
    /// <summary>How long an account recognises an operation id it applied (bounded also by its ledger's 1,000 entries).</summary>
    public static readonly TimeSpan Window = TimeSpan.FromHours(24);
}

/// <summary>What became of a <see cref="BalanceChange"/>.</summary>
public enum BalanceChangeStatus
{
    /// <summary>Applied now.</summary>
    Applied = 0,

    /// <summary>Applied before under the same id: nothing changed now.</summary>
    Replayed = 1,

    /// <summary>The id names an earlier, different change: nothing changed.</summary>
    Mismatch = 2,
}

/// <summary>The account after a <see cref="BalanceChange"/>, and whether it was applied now.</summary>
[GenerateSerializer, Immutable, Alias("mk.BalanceChangeResult")]
public sealed record BalanceChangeResult(
    [property: Id(0)] AccountInfo Account,
    [property: Id(1)] BalanceChangeStatus Status);

/// <summary>Settled calls to one data service, added up.</summary>
/// <param name="ChargedCalls">Calls that were charged.</param>
/// <param name="Amount">Money charged for them, in minor units.</param>
[GenerateSerializer, Immutable, Alias("mk.ServiceUsageDelta")]
public sealed record ServiceUsageDelta(
    [property: Id(0)] string ServiceId,
    [property: Id(1)] long Calls,
    [property: Id(2)] long ChargedCalls,
    [property: Id(3)] long Failed,
    [property: Id(4)] long Amount);

/// <summary>Settlements of many calls of one account: reservations to release, money to charge, calls to count.</summary>
/// <param name="ReservedReleased">All the reservations to release.</param>
/// <param name="Releases">The same, by the hold each was made in; null releases from the oldest holds.</param>
[GenerateSerializer, Immutable, Alias("mk.SettlementBatch")]
public sealed record SettlementBatch(
    [property: Id(0)] long ReservedReleased,
    [property: Id(1)] long Charged,
    [property: Id(2)] IReadOnlyList<ServiceUsageDelta> Services,
    [property: Id(3)] IReadOnlyList<HoldRelease>? Releases = null,
    [property: Id(4)] DeliveryId? Delivery = null);

/// <summary>An amount to release from one of an account's holds.</summary>
[GenerateSerializer, Immutable, Alias("mk.HoldRelease")]
public readonly record struct HoldRelease(
    [property: Id(0)] long Hold,
    [property: Id(1)] long Amount);

/// <summary>A key asking its account for a call's price, returning its unused lease, and asking for more.</summary>
/// <param name="Returning">What is left of the key's lease, by hold, handed back with this request.</param>
/// <param name="LeaseCalls">How many more calls' worth of allowance the key would like to hold.</param>
[GenerateSerializer, Immutable, Alias("mk.LeaseRequest")]
/// <param name="Seen">
/// The sequence number of the newest lease the key vouches for: it has received every lease up to it, and nothing it handed
/// back in another message is still on its way. The account counts the key as a lessee until it vouches for the newest.
/// </param>
/// <param name="Request">
/// Names the request: one whose answer was lost is sent again with the same id, and the account answers it as the first time
/// (the same hold and lease) without reserving or taking back anything again.
/// </param>
public sealed record LeaseRequest(
    [property: Id(0)] string KeyId,
    [property: Id(1)] long Amount,
    [property: Id(2)] IReadOnlyList<HoldRelease> Returning,
    [property: Id(3)] int LeaseCalls,
    [property: Id(4)] long Seen,
    [property: Id(5)] RequestId? Request = null);

/// <summary>The account's answer to a <see cref="LeaseRequest"/>.</summary>
/// <param name="Lease">Extra allowance leased to the key, beyond the granted amount.</param>
/// <param name="Hold">The hold carrying the granted amount and the lease.</param>
/// <param name="Retry">Not covered now, but leases held by other keys are being recalled: ask again shortly.</param>
[GenerateSerializer, Immutable, Alias("mk.LeaseGrant")]
public sealed record LeaseGrant(
    [property: Id(0)] bool Granted,
    [property: Id(1)] long Available,
    [property: Id(2)] string Currency,
    [property: Id(3)] bool CapReached,
    [property: Id(4)] long Lease,
    [property: Id(5)] bool Retry,
    [property: Id(6)] long Sequence = 0,
    [property: Id(7)] long Hold = 0);
