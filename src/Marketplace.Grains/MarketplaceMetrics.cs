using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using Polly.CircuitBreaker;

namespace Marketplace.Grains;

/// <summary>
/// The marketplace's own metrics, one <see cref="Meter"/> named <see cref="MeterName"/> (exported by the host, e.g. to
/// Prometheus at <c>/metrics</c>). Recording is cheap enough for every call: tags go in a stack-allocated
/// <see cref="TagList"/>, tag values are interned strings, and nothing is recorded at all while no listener is attached.
/// </summary>
/// <remarks>
/// Tags carry only bounded values: service ids of existing services, version ids, enum names and fixed reasons.
/// A call to a service that does not exist is counted under <see cref="UnknownServiceTag"/>, never under the id the
/// caller typed.
/// </remarks>
public sealed class MarketplaceMetrics
{
    /// <summary>Name of the meter, for <c>AddMeter</c>.</summary>
    public const string MeterName = "Marketplace";

    /// <summary>The <c>service</c> tag of calls to a service that does not exist.</summary>
    public const string UnknownServiceTag = "_unknown";

    // Seconds; calls take from well under a millisecond (refusals) to the longest upstream timeout.
    private static readonly IReadOnlyList<double> DurationBuckets =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private static readonly string?[] OutcomeNames = SnakeCaseNames<CallOutcome>();
    private static readonly string?[] AdmitNames = SnakeCaseNames<AdmitOutcome>();

    private readonly Counter<long> _calls;
    private readonly Counter<long> _rejections;
    private readonly Histogram<double> _callDuration;
    private readonly Histogram<double> _upstreamDuration;
    private readonly Counter<long> _upstreamErrors;
    private readonly Counter<long> _leaseRefills;
    private readonly Counter<long> _reservationsExpired;
    private readonly Counter<long> _holdCeilingRaises;
    private readonly Counter<long> _holdCeilingUnstored;
    private readonly Counter<long> _unsettledCeilingUnstored;

    /// <summary>Creates the instruments on a meter from <paramref name="meters"/>.</summary>
    public MarketplaceMetrics(IMeterFactory meters, UpstreamProtection protection, SettlementBatcher settlements)
    {
        var meter = meters.Create(MeterName);
        _calls = meter.CreateCounter<long>("marketplace.calls", "{call}",
            "Calls through the call pipeline, by service, outcome and serving version.");
        _rejections = meter.CreateCounter<long>("marketplace.rejections", "{call}",
            "Calls refused before reaching the upstream, by service and reason.");
        _callDuration = meter.CreateHistogram("marketplace.call.duration", "s",
            "Time from receiving a call to its answer, by service and outcome.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });
        _upstreamDuration = meter.CreateHistogram("marketplace.upstream.duration", "s",
            "Time spent waiting for the upstream (retries included), by service and version.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });
        _upstreamErrors = meter.CreateCounter<long>("marketplace.upstream.errors", "{error}",
            "Failed upstream attempts, by service, version and kind (timeout, unreachable, status_5xx, invalid).");
        _leaseRefills = meter.CreateCounter<long>("marketplace.lease.refills", "{lease}",
            "Balance leases an API key received from its account.");
        _reservationsExpired = meter.CreateCounter<long>("marketplace.reservations.expired", "{minor_unit}",
            "Money held for calls or leases that nobody released within Metering:ReservationTimeout, given back by the account.");
        _holdCeilingRaises = meter.CreateCounter<long>("marketplace.account.hold_ceiling_raises", "{write}",
            "Stored raises of an account's hold ceiling: writes an admission waited for because the account's holds grew past it.");
        _holdCeilingUnstored = meter.CreateCounter<long>("marketplace.account.hold_ceiling_unstored", "{raise}",
            "Raises of an account's hold ceiling admissions went on without (the database slow or away; written behind).");
        _unsettledCeilingUnstored = meter.CreateCounter<long>("marketplace.key.unsettled_ceiling_unstored", "{admission}",
            "Admissions a key let through before its raised unsettled-calls ceiling was stored (the database slow or away; written behind).");
        meter.CreateObservableGauge("marketplace.breaker.state", () => ObserveBreakers(protection), "{state}",
            "Circuit breaker of each service version on this silo: 0 closed, 1 half-open, 2 open, 3 isolated.");
        meter.CreateObservableGauge("marketplace.settlement.pending", () => settlements.PendingCount, "{call}",
            "Settled calls waiting for the next settlement batch.");
        meter.CreateObservableCounter("marketplace.settlement.flushes", () => settlements.Flushes, "{flush}",
            "Settlement batches sent.");
    }

    /// <summary>
    /// Records one finished call: <c>marketplace.calls</c>, <c>marketplace.call.duration</c>, the upstream's time when
    /// it was called, and a <c>marketplace.rejections</c> for calls the marketplace refused itself
    /// (<see cref="CallOutcome.Rejected"/> by its <paramref name="rejection"/>, <see cref="CallOutcome.UpstreamRateLimited"/>
    /// and <see cref="CallOutcome.ServiceSuspended"/>). A <see cref="CallOutcome.UpstreamUnavailable"/> call is not
    /// counted as a rejection here, because only the pipeline knows whether the breaker or the concurrency limit shed
    /// it: call <see cref="RecordShed"/> for that.
    /// </summary>
    /// <param name="serviceId">The service the call named; replaced by <see cref="UnknownServiceTag"/> for <see cref="CallOutcome.UnknownService"/>.</param>
    /// <param name="version">The version that served (or was chosen for) the call, or null when none was.</param>
    /// <param name="outcome">How the call ended.</param>
    /// <param name="rejection">Why admission refused the call, for <see cref="CallOutcome.Rejected"/>.</param>
    /// <param name="total">Time from receiving the call to its answer.</param>
    /// <param name="upstream">Time spent in the upstream call, when one was made.</param>
    public void RecordCall(string serviceId, string? version, CallOutcome outcome, AdmitOutcome? rejection, TimeSpan total, TimeSpan? upstream)
    {
        var service = outcome == CallOutcome.UnknownService ? UnknownServiceTag : serviceId;
        var outcomeName = Name(OutcomeNames, (int)outcome);
        if (_calls.Enabled)
        {
            var tags = new TagList { { "service", service }, { "outcome", outcomeName } };
            if (version is not null)
            {
                tags.Add("version", version);
            }

            _calls.Add(1, tags);
        }

        if (_callDuration.Enabled)
        {
            _callDuration.Record(total.TotalSeconds, new TagList { { "service", service }, { "outcome", outcomeName } });
        }

        if (upstream is { } upstreamTime && version is not null && _upstreamDuration.Enabled)
        {
            _upstreamDuration.Record(upstreamTime.TotalSeconds, new TagList { { "service", service }, { "version", version } });
        }

        var reason = outcome switch
        {
            CallOutcome.Rejected when rejection is { } admit => Name(AdmitNames, (int)admit),
            CallOutcome.Rejected => "rejected",
            CallOutcome.UpstreamRateLimited => Reasons.UpstreamRateLimited,
            CallOutcome.ServiceSuspended => Reasons.Suspended,
            _ => null,
        };
        if (reason is not null)
        {
            RecordShed(service, reason);
        }
    }

    /// <summary>Counts one call refused before reaching the upstream (see <see cref="Reasons"/>), on top of what <see cref="RecordCall"/> counts.</summary>
    public void RecordShed(string serviceId, string reason)
    {
        if (_rejections.Enabled)
        {
            _rejections.Add(1, new TagList { { "service", serviceId }, { "reason", reason } });
        }
    }

    /// <summary>Counts one failed upstream attempt; <paramref name="kind"/> is one of <see cref="UpstreamErrorKinds"/>.</summary>
    public void RecordUpstreamError(string serviceId, string version, string kind)
    {
        if (_upstreamErrors.Enabled)
        {
            _upstreamErrors.Add(1, new TagList { { "service", serviceId }, { "version", version }, { "kind", kind } });
        }
    }

    /// <summary>Counts one balance lease an API key received from its account.</summary>
    public void RecordLeaseRefill() => _leaseRefills.Add(1);

    /// <summary>Counts one stored raise of an account's hold ceiling (a write before its holds grow).</summary>
    public void RecordHoldCeilingRaised() => _holdCeilingRaises.Add(1);

    /// <summary>Counts one raise of an account's hold ceiling that admissions did not wait for (the database slow or away).</summary>
    public void RecordHoldCeilingUnstored() => _holdCeilingUnstored.Add(1);

    /// <summary>Counts one admission a key let through before its raised unsettled-calls ceiling was stored.</summary>
    public void RecordUnsettledCeilingUnstored() => _unsettledCeilingUnstored.Add(1);

    /// <summary>Counts money an account released because its hold outlived the reservation timeout.</summary>
    public void RecordReservationsExpired(long amount) => _reservationsExpired.Add(amount);

    /// <summary>The value of <c>marketplace.breaker.state</c> for a breaker state.</summary>
    public static int BreakerValue(CircuitState state) => state switch
    {
        CircuitState.Closed => 0,
        CircuitState.HalfOpen => 1,
        CircuitState.Open => 2,
        CircuitState.Isolated => 3,
        _ => -1,
    };

    /// <summary>The <c>outcome</c> tag of a call outcome (snake case, e.g. <c>upstream_timeout</c>).</summary>
    public static string OutcomeTag(CallOutcome outcome) => Name(OutcomeNames, (int)outcome);

    /// <summary>The <c>reason</c> tag of an admission refusal (snake case, e.g. <c>insufficient_balance</c>).</summary>
    public static string RejectionTag(AdmitOutcome rejection) => Name(AdmitNames, (int)rejection);

    private static List<Measurement<int>> ObserveBreakers(UpstreamProtection protection)
    {
        var states = protection.BreakerStates();
        var measurements = new List<Measurement<int>>(states.Count);
        foreach (var (key, state) in states)
        {
            // Keys are "service/version"; version ids never contain '/'.
            var slash = key.LastIndexOf('/');
            var tags = slash < 0
                ? new TagList { { "service", key } }
                : new TagList { { "service", key[..slash] }, { "version", key[(slash + 1)..] } };
            measurements.Add(new Measurement<int>(BreakerValue(state), tags));
        }

        return measurements;
    }

    private static string Name(string?[] names, int value) =>
        (uint)value < (uint)names.Length && names[value] is { } name ? name : value.ToString(CultureInfo.InvariantCulture);

    private static string?[] SnakeCaseNames<TEnum>() where TEnum : struct, Enum
    {
        var values = Enum.GetValues<TEnum>();
        var max = 0;
        foreach (var value in values)
        {
            max = Math.Max(max, Convert.ToInt32(value, CultureInfo.InvariantCulture));
        }

        var names = new string?[max + 1];
        foreach (var value in values)
        {
            var number = Convert.ToInt32(value, CultureInfo.InvariantCulture);
            if (number >= 0)
            {
                names[number] = SnakeCase(value.ToString());
            }
        }

        return names;
    }

    private static string SnakeCase(string name)
    {
        var builder = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0)
            {
                builder.Append('_');
            }

            builder.Append(char.ToLowerInvariant(name[i]));
        }

        return builder.ToString();
    }

    /// <summary>The <c>reason</c> tags of <c>marketplace.rejections</c> besides the admission refusals.</summary>
    public static class Reasons
    {
        /// <summary>The service's own rate limit towards its upstream is exhausted on this silo.</summary>
        public const string UpstreamRateLimited = "upstream_rate_limited";

        /// <summary>The version's circuit breaker refused the call.</summary>
        public const string BreakerOpen = "breaker_open";

        /// <summary>The version's concurrency limit on this silo is reached.</summary>
        public const string ConcurrencyFull = "concurrency_full";

        /// <summary>The service is suspended.</summary>
        public const string Suspended = "suspended";
    }

    /// <summary>The <c>kind</c> tags of <c>marketplace.upstream.errors</c>.</summary>
    public static class UpstreamErrorKinds
    {
        /// <summary>The upstream did not answer in time.</summary>
        public const string Timeout = "timeout";

        /// <summary>The upstream could not be reached.</summary>
        public const string Unreachable = "unreachable";

        /// <summary>The upstream answered 5xx.</summary>
        public const string Status5xx = "status_5xx";

        /// <summary>The upstream's answer could not be read.</summary>
        public const string Invalid = "invalid";
    }
}
