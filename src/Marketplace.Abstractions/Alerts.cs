namespace Marketplace;

/// <summary>What an alert watches.</summary>
public enum AlertEvent
{
    /// <summary>
    /// A daily or monthly call quota of one of the account's keys (over all its calls, or for one data service): fires
    /// when the calls counted in the quota's current window reach the threshold percent of its limit, once per
    /// (alert, key, quota, window, threshold). The next window starts over.
    /// </summary>
    Quota = 0,

    /// <summary>
    /// The account's balance. A <em>balance cycle</em> starts at each top-up (or, when no top-up happened since, when the
    /// account's first balance alert is registered). Its base B is what the account could spend right then: balance plus
    /// credit limit, without calls in flight. <c>used = B - (balance + credit limit)</c>, counting settled charges and
    /// adjustments since; <c>used % = used × 100 / B</c>. A threshold fires once per cycle, the first time used % reaches
    /// it (100 means nothing is left to spend); a top-up starts a new cycle, so every threshold can fire again.
    /// </summary>
    Balance = 1,
}

/// <summary>What a consumer sends to register a webhook alert.</summary>
/// <param name="Url">Absolute http or https URL (at most 2048 characters, no credentials) the marketplace POSTs to.</param>
/// <param name="Events">What to watch: 1 or 2 distinct events.</param>
/// <param name="Thresholds">1 to 5 percentages, each 1 to 100.</param>
[GenerateSerializer, Immutable, Alias("mk.AlertSpec")]
public sealed record AlertSpec(
    [property: Id(0)] string Url,
    [property: Id(1)] IReadOnlyList<AlertEvent> Events,
    [property: Id(2)] IReadOnlyList<int> Thresholds);

/// <summary>A registered alert as its owner sees it; never carries the signing secret.</summary>
/// <param name="Delivered">Deliveries the receiver acknowledged with a 2xx answer.</param>
/// <param name="Pending">Deliveries waiting for their first attempt or a retry.</param>
/// <param name="LastError">Why the most recent delivery that exhausted its retries failed; null when none has.</param>
/// <param name="NextAttemptAt">When the earliest pending delivery is (re)tried; null when none is pending.</param>
[GenerateSerializer, Immutable, Alias("mk.AlertInfo")]
public sealed record AlertInfo(
    [property: Id(0)] string AlertId,
    [property: Id(1)] string AccountId,
    [property: Id(2)] string Url,
    [property: Id(3)] IReadOnlyList<AlertEvent> Events,
    [property: Id(4)] IReadOnlyList<int> Thresholds,
    [property: Id(5)] DateTimeOffset CreatedAt,
    [property: Id(6)] long Delivered,
    [property: Id(7)] int Pending,
    [property: Id(8)] DateTimeOffset? LastDeliveredAt,
    [property: Id(9)] string? LastError,
    [property: Id(10)] DateTimeOffset? LastErrorAt,
    [property: Id(11)] DateTimeOffset? NextAttemptAt = null);

/// <summary>The answer to registering an alert: the only time its signing secret is shown.</summary>
/// <param name="Secret">
/// The HMAC-SHA256 key (its UTF-8 bytes) of the <c>X-Marketplace-Signature: t=&lt;unix seconds&gt;,v1=&lt;hex&gt;</c> header,
/// computed over <c>"&lt;t&gt;.&lt;body&gt;"</c>.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.AlertCreated")]
public sealed record AlertCreated(
    [property: Id(0)] AlertInfo Alert,
    [property: Id(1)] string Secret);

/// <summary>A key telling its account's alerts that a quota counter reached one of their thresholds.</summary>
/// <param name="Policy"><c>day</c>, <c>month</c>, <c>service-day</c> or <c>service-month</c>, as in the RateLimit headers.</param>
/// <param name="ServiceId">The data service of a per-service quota; null for the key's own quotas.</param>
[GenerateSerializer, Immutable, Alias("mk.QuotaSignal")]
public sealed record QuotaSignal(
    [property: Id(0)] string KeyId,
    [property: Id(1)] string Policy,
    [property: Id(2)] string? ServiceId,
    [property: Id(3)] DateTimeOffset WindowStart,
    [property: Id(4)] long Used,
    [property: Id(5)] long Limit,
    [property: Id(6)] DateTimeOffset At);

/// <summary>An account telling its alerts where its balance stands (see <see cref="AlertEvent.Balance"/>).</summary>
/// <param name="Cycle">The account's total top-ups when the cycle started; a larger number is a newer cycle.</param>
/// <param name="CycleBase">Balance plus credit limit when the cycle started.</param>
/// <param name="Spendable">Balance plus credit limit now.</param>
[GenerateSerializer, Immutable, Alias("mk.BalanceSignal")]
public sealed record BalanceSignal(
    [property: Id(0)] long Cycle,
    [property: Id(1)] long CycleBase,
    [property: Id(2)] long Spendable,
    [property: Id(3)] DateTimeOffset At);

/// <summary>
/// What keys and the account cache of their account's alerts, so they only send a signal when a counter or the balance
/// crosses a threshold (not once per call).
/// </summary>
/// <param name="Version">Grows with every change; a watcher keeps the newest it has seen.</param>
/// <param name="QuotaThresholds">Distinct thresholds of the quota alerts, ascending.</param>
/// <param name="BalanceThresholds">Distinct thresholds of the balance alerts, ascending.</param>
/// <param name="Cycle">The current balance cycle (see <see cref="BalanceSignal.Cycle"/>), when there are balance alerts.</param>
[GenerateSerializer, Immutable, Alias("mk.AlertWatch")]
public sealed record AlertWatch(
    [property: Id(0)] long Version,
    [property: Id(1)] IReadOnlyList<int> QuotaThresholds,
    [property: Id(2)] IReadOnlyList<int> BalanceThresholds,
    [property: Id(3)] long? Cycle,
    [property: Id(4)] long CycleBase);

/// <summary>
/// The webhook alerts of one consumer account (grain key: the account id): registrations, what has fired, and deliveries
/// with their retries. Each delivery is a POST of JSON
/// <c>{ deliveryId, alertId, event, threshold, accountId, keyId?, policy?, serviceId?, windowStart?, used, limit, at }</c>
/// with the headers <c>X-Marketplace-Signature</c>, <c>X-Marketplace-Event</c> and <c>X-Marketplace-Delivery</c>.
/// </summary>
[Alias("mk.IAlertGrain")]
public interface IAlertGrain : IGrainWithStringKey
{
    /// <summary>Registers an alert (at most 10 per account) with a fresh signing secret, returned once.</summary>
    [Alias("CreateAsync")]
    Task<AlertCreated> CreateAsync(AlertSpec spec);

    /// <summary>The account's alerts, oldest first.</summary>
    [Alias("ListAsync")]
    Task<IReadOnlyList<AlertInfo>> ListAsync();

    /// <summary>Removes an alert and drops its pending deliveries; false when there is no such alert.</summary>
    [Alias("DeleteAsync")]
    Task<bool> DeleteAsync(string alertId);

    /// <summary>What the account's keys and the account itself cache to decide when to signal.</summary>
    [AlwaysInterleave, Alias("GetWatchAsync")]
    Task<AlertWatch> GetWatchAsync();

    /// <summary>A quota counter of one of the account's keys reached a threshold; fire and forget.</summary>
    [OneWay, Alias("NotifyQuotaAsync")]
    Task NotifyQuotaAsync(QuotaSignal signal);

    /// <summary>The balance crossed a threshold, or a top-up started a new cycle; fire and forget.</summary>
    [OneWay, Alias("NotifyBalanceAsync")]
    Task NotifyBalanceAsync(BalanceSignal signal);
}

/// <summary>
/// Implemented by the grains that signal alerts (API keys and accounts): the alert grain hands them a changed
/// <see cref="AlertWatch"/>. Address it through the grain's own interface, e.g.
/// <c>GetGrain&lt;IApiKeyGrain&gt;(id).AsReference&lt;IAlertWatcher&gt;()</c>.
/// </summary>
[Alias("mk.IAlertWatcher")]
public interface IAlertWatcher : IGrainWithStringKey
{
    /// <summary>Replaces the cached watch when it is newer than the one held.</summary>
    [AlwaysInterleave, Alias("WatchAlertsAsync")]
    Task WatchAlertsAsync(AlertWatch watch);
}
