using System.Globalization;
using System.Text;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Silo.Apis;

/// <summary>The rollup rows a report reads: those of one granularity whose bucket starts in [<see cref="From"/>, <see cref="To"/>).</summary>
/// <param name="From">Start (inclusive), aligned to the granularity.</param>
/// <param name="To">End (exclusive), aligned to the granularity.</param>
/// <param name="Granularity"><c>minute</c>, <c>hour</c> or <c>day</c>.</param>
public sealed record ReportWindow(DateTimeOffset From, DateTimeOffset To, string Granularity);

/// <summary>
/// What one report query reads and how it groups it. A query that needs neither account nor key (no account filter, not
/// grouped by key or account) reads the per-service rollups (<c>marketplace_usage_service_rollup</c>), which hold the same
/// sums without the account and key split; the others read the per-account rollups (<c>marketplace_usage_rollup</c>).
/// </summary>
/// <param name="Window">The rows' granularity and time range.</param>
/// <param name="GroupBy">
/// <c>service</c>, <c>key</c>, <c>version</c> (service and version), <c>account</c>, <c>day</c> (UTC), <c>bucket</c> (one group per
/// bucket of the granularity) or <c>total</c> (one group). Every group is further split by currency.
/// </param>
/// <param name="AccountId">Only this account's calls, when set.</param>
/// <param name="ServiceIds">Only these services' calls, when set.</param>
/// <param name="Top">When set, the groups with the most calls, at most this many; otherwise every group, in group order.</param>
/// <param name="WithAccountOnly">Leaves out calls rejected before an account was known.</param>
/// <param name="Latency">Sums the latency histograms (for percentiles); without, <see cref="ReportRow.LatencyBuckets"/> is empty.</param>
/// <param name="PerAccountRows">Reads the per-account rollups even when the per-service ones would do (for comparisons).</param>
public sealed record ReportQuery(
    ReportWindow Window, string GroupBy, string? AccountId = null, IReadOnlyList<string>? ServiceIds = null, int? Top = null, bool WithAccountOnly = false,
    bool Latency = true, bool PerAccountRows = false)
{
    /// <summary>True when the per-service rollups answer this query.</summary>
    public bool ReadsServiceRows => !PerAccountRows && AccountId is null && !WithAccountOnly && GroupBy is not ("key" or "account");
}

/// <summary>One group of a report, summed from the rollup rows: calls, the amount charged, failures and the latency histogram.</summary>
/// <param name="Group">The group's value (a service id, key id, <c>service/version</c>, account id, UTC day or bucket start; empty for totals).</param>
/// <param name="Currency">The currency of <paramref name="Charged"/> (empty for calls that never had a price).</param>
/// <param name="Calls">Calls counted.</param>
/// <param name="Charged">Amount charged, in minor units of <paramref name="Currency"/>.</param>
/// <param name="Failed">Calls whose outcome is other than <c>succeeded</c>.</param>
/// <param name="LatencyBuckets">Calls per latency bucket (<see cref="CallLogWriter.LatencyBoundsMs"/>, then the overflow); empty when not asked for.</param>
public sealed record ReportRow(string Group, string Currency, long Calls, long Charged, long Failed, long[] LatencyBuckets)
{
    /// <summary>Failed calls over all calls, rounded to 4 decimals.</summary>
    public double ErrorRate => Calls == 0 ? 0 : Math.Round((double)Failed / Calls, 4);

    /// <summary>Estimated latency percentile (ms) of the group, see <see cref="ReportsApi.Percentile"/>.</summary>
    public double PercentileMs(double q) => ReportsApi.Percentile(LatencyBuckets, q);
}

/// <summary>A report as JSON: the window read, the grouping and the rows.</summary>
public sealed record Report<TRow>(DateTimeOffset From, DateTimeOffset To, string Granularity, string GroupBy, IReadOnlyList<TRow> Rows);

/// <summary>A line of a consumer's usage report.</summary>
public sealed record UsageReportRow(string Group, string Currency, long Calls, long Charged, long Failed, double P50Ms, double P95Ms, double P99Ms);

/// <summary>A line of a provider's revenue report.</summary>
public sealed record RevenueReportRow(string Group, string Currency, long Calls, long Revenue, long Failed, double ErrorRate);

/// <summary>Totals of one currency in the admin summary.</summary>
public sealed record SummaryReportRow(string Currency, long Calls, long Charged, long Failed, double ErrorRate, double P50Ms, double P95Ms, double P99Ms);

/// <summary>The admin summary: totals over every currency, then per currency.</summary>
public sealed record SummaryReport(
    DateTimeOffset From, DateTimeOffset To, string Granularity, long Calls, long Failed, double ErrorRate, double P50Ms, double P95Ms, double P99Ms,
    IReadOnlyList<SummaryReportRow> Rows);

/// <summary>A line of the admin top list.</summary>
public sealed record TopReportRow(int Rank, string Id, string Currency, long Calls, long Charged, long Failed, double ErrorRate);

/// <summary>
/// Usage reports for consumers (<c>/v1/reports/usage</c>), providers (<c>/provider/reports/revenue</c>) and admins
/// (<c>/admin/reports/summary</c>, <c>/admin/reports/top</c>). They read only the usage rollups, which the call-log writer
/// keeps equal to a count of the call log: per account and key for consumers and the top consumers (a day over hundreds of
/// millions of calls is a few hundred thousand rows at most), per service for the rest (a few thousand rows a day).
/// JSON by default, CSV (with a header row) with <c>?format=csv</c>.
/// </summary>
public static class ReportsApi
{
    /// <summary>Longest window per granularity: minutes for 2 days, hours for 90 days, days for 3 years.</summary>
    public static IReadOnlyDictionary<string, TimeSpan> MaxRange { get; } = new Dictionary<string, TimeSpan>
    {
        ["minute"] = TimeSpan.FromDays(2),
        ["hour"] = TimeSpan.FromDays(90),
        ["day"] = TimeSpan.FromDays(1096),
    };

    private const int DefaultTop = 10;
    private const int MaxTop = 100;
    private static readonly string[] _consumerGroups = ["service", "key", "day", "bucket"];
    private static readonly string[] _providerGroups = ["service", "version", "day", "bucket"];

    /// <summary>Maps <c>/v1/reports/usage</c>: the calling key's account only.</summary>
    public static IEndpointRouteBuilder MapConsumerReportsApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/reports/usage", UsageAsync).WithTags("Consumer");
        return app;
    }

    /// <summary>Maps <c>/provider/reports/revenue</c> behind provider authentication: the provider's services only.</summary>
    public static RouteGroupBuilder MapProviderReportsApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/provider/reports").WithTags("Provider").AddEndpointFilter<ProviderAuthentication>();
        group.MapGet("/revenue", RevenueAsync);
        return group;
    }

    /// <summary>Maps <c>/admin/reports/summary</c> and <c>/admin/reports/top</c>.</summary>
    public static RouteGroupBuilder MapAdminReportsApi(this RouteGroupBuilder admin)
    {
        var group = admin.MapGroup("/reports").WithTags("Reports");
        group.MapGet("/summary", SummaryAsync);
        group.MapGet("/top", TopAsync);
        return group;
    }

    /// <summary>A consumer's calls, charges, failures and latency percentiles, grouped by service, key, day or bucket.</summary>
    public static async Task<Results<Ok<Report<UsageReportRow>>, ContentHttpResult, ValidationProblem, ProblemHttpResult>> UsageAsync(
        string? from, string? to, string? granularity, string? groupBy, string? format,
        HttpContext context, IGrainFactory grains, NpgsqlDataSource database, TimeProvider time, CancellationToken cancellationToken)
    {
        if (await CallApi.AuthenticateKeyAsync(context, grains) is not { } key)
        {
            return Problems.Unauthorized(context, "Send a valid API key in the X-Api-Key header or as a bearer token.");
        }

        var errors = new Dictionary<string, string[]>();
        var window = ParseWindow(from, to, granularity, time.GetUtcNow(), errors);
        var grouping = ParseChoice(groupBy, "groupBy", _consumerGroups, errors);
        var csv = ParseFormat(format, errors);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var rows = await QueryAsync(database, new ReportQuery(window!, grouping!, AccountId: key.AccountId), cancellationToken);
        var lines = rows.Select(r => new UsageReportRow(r.Group, r.Currency, r.Calls, r.Charged, r.Failed, r.PercentileMs(0.50), r.PercentileMs(0.95), r.PercentileMs(0.99))).ToList();
        return csv
            ? Csv(["group", "currency", "calls", "charged", "failed", "p50_ms", "p95_ms", "p99_ms"],
                lines.Select(l => new object[] { l.Group, l.Currency, l.Calls, l.Charged, l.Failed, l.P50Ms, l.P95Ms, l.P99Ms }))
            : TypedResults.Ok(new Report<UsageReportRow>(window!.From, window.To, window.Granularity, grouping!, lines));
    }

    /// <summary>A provider's calls, revenue and error rate over its own services, grouped by service, version, day or bucket.</summary>
    public static async Task<Results<Ok<Report<RevenueReportRow>>, ContentHttpResult, ValidationProblem, ProblemHttpResult>> RevenueAsync(
        string? from, string? to, string? granularity, string? groupBy, string? format,
        HttpContext context, IGrainFactory grains, NpgsqlDataSource database, TimeProvider time, CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var window = ParseWindow(from, to, granularity, time.GetUtcNow(), errors);
        var grouping = ParseChoice(groupBy, "groupBy", _providerGroups, errors);
        var csv = ParseFormat(format, errors);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var services = await ProviderServicesAsync(grains, ProviderAuthentication.ProviderId(context));
        IReadOnlyList<ReportRow> rows = services.Count == 0
            ? []
            : await QueryAsync(database, new ReportQuery(window!, grouping!, ServiceIds: services, Latency: false), cancellationToken);
        var lines = rows.Select(r => new RevenueReportRow(r.Group, r.Currency, r.Calls, r.Charged, r.Failed, r.ErrorRate)).ToList();
        return csv
            ? Csv(["group", "currency", "calls", "revenue", "failed", "error_rate"],
                lines.Select(l => new object[] { l.Group, l.Currency, l.Calls, l.Revenue, l.Failed, l.ErrorRate }))
            : TypedResults.Ok(new Report<RevenueReportRow>(window!.From, window.To, window.Granularity, grouping!, lines));
    }

    /// <summary>Totals over every call: calls, failures, error rate and latency percentiles, and the amounts per currency.</summary>
    public static async Task<Results<Ok<SummaryReport>, ContentHttpResult, ValidationProblem>> SummaryAsync(
        string? from, string? to, string? granularity, string? format, NpgsqlDataSource database, TimeProvider time, CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var window = ParseWindow(from, to, granularity, time.GetUtcNow(), errors);
        var csv = ParseFormat(format, errors);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var rows = await QueryAsync(database, new ReportQuery(window!, "total"), cancellationToken);
        var perCurrency = rows.Select(r => new SummaryReportRow(
            r.Currency, r.Calls, r.Charged, r.Failed, r.ErrorRate, r.PercentileMs(0.50), r.PercentileMs(0.95), r.PercentileMs(0.99))).ToList();
        if (csv)
        {
            return Csv(["currency", "calls", "charged", "failed", "error_rate", "p50_ms", "p95_ms", "p99_ms"],
                perCurrency.Select(l => new object[] { l.Currency, l.Calls, l.Charged, l.Failed, l.ErrorRate, l.P50Ms, l.P95Ms, l.P99Ms }));
        }

        var total = Combine(rows);
        return TypedResults.Ok(new SummaryReport(window!.From, window.To, window.Granularity, total.Calls, total.Failed, total.ErrorRate,
            total.PercentileMs(0.50), total.PercentileMs(0.95), total.PercentileMs(0.99), perCurrency));
    }

    /// <summary>The consumers (accounts) or services with the most calls.</summary>
    public static async Task<Results<Ok<Report<TopReportRow>>, ContentHttpResult, ValidationProblem>> TopAsync(
        string? from, string? to, string? granularity, string? by, int? limit, string? format,
        NpgsqlDataSource database, TimeProvider time, CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>();
        var window = ParseWindow(from, to, granularity, time.GetUtcNow(), errors);
        var ranking = ParseChoice(by, "by", ["consumers", "services"], errors);
        var csv = ParseFormat(format, errors);
        if (limit is < 1 or > MaxTop)
        {
            errors["limit"] = [$"limit is 1 to {MaxTop}."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var consumers = ranking == "consumers";
        var rows = await QueryAsync(database,
            new ReportQuery(window!, consumers ? "account" : "service", Top: limit ?? DefaultTop, WithAccountOnly: consumers, Latency: false), cancellationToken);
        var lines = rows.Select((r, i) => new TopReportRow(i + 1, r.Group, r.Currency, r.Calls, r.Charged, r.Failed, r.ErrorRate)).ToList();
        return csv
            ? Csv(["rank", "id", "currency", "calls", "charged", "failed", "error_rate"],
                lines.Select(l => new object[] { l.Rank, l.Id, l.Currency, l.Calls, l.Charged, l.Failed, l.ErrorRate }))
            : TypedResults.Ok(new Report<TopReportRow>(window!.From, window.To, window.Granularity, ranking!, lines));
    }

    /// <summary>Runs a report query against the rollups.</summary>
    public static async Task<IReadOnlyList<ReportRow>> QueryAsync(NpgsqlDataSource database, ReportQuery query, CancellationToken cancellationToken)
    {
        await using var command = CreateCommand(database, query);
        var rows = new List<ReportRow>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var buckets = query.Latency ? CallLogWriter.LatencyBoundsMs.Count + 1 : 0;
        while (await reader.ReadAsync(cancellationToken))
        {
            var histogram = new long[buckets];
            for (var b = 0; b < buckets; b++)
            {
                histogram[b] = reader.GetInt64(5 + b);
            }

            rows.Add(new ReportRow(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4), histogram));
        }

        return rows;
    }

    /// <summary>
    /// The SQL of a report: one pass over the rollup rows of the window (per service when <see cref="ReportQuery.ReadsServiceRows"/>,
    /// otherwise per account in the granularity's partition; through the primary key, or the account or service index when
    /// the query names one), summing calls, amounts, failures and, when asked for, each histogram bucket per group and currency.
    /// </summary>
    public static NpgsqlCommand CreateCommand(NpgsqlDataSource database, ReportQuery query)
    {
        var group = query.GroupBy switch
        {
            "service" => "service_id",
            "key" => "key_id",
            "version" => "service_id || '/' || version",
            "account" => "account_id",
            "day" => "to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            "bucket" => "to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')",
            "total" => "''",
            _ => throw new ArgumentException($"Unknown grouping '{query.GroupBy}'.", nameof(query)),
        };
        var sql = new StringBuilder();
        sql.Append("SELECT ").Append(group).Append(" AS grp, currency, sum(calls)::bigint, sum(charged)::bigint, ")
            .Append("coalesce(sum(calls) FILTER (WHERE outcome <> 'succeeded'), 0)::bigint");
        for (var b = 1; query.Latency && b <= CallLogWriter.LatencyBoundsMs.Count + 1; b++)
        {
            sql.Append(CultureInfo.InvariantCulture, $", sum(latency_buckets[{b}])::bigint");
        }

        sql.Append(query.ReadsServiceRows ? " FROM marketplace_usage_service_rollup" : " FROM marketplace_usage_rollup")
            .Append(" WHERE granularity = $1 AND bucket_start >= $2 AND bucket_start < $3");
        var command = database.CreateCommand();
        command.Parameters.Add(new NpgsqlParameter { Value = query.Window.Granularity, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = query.Window.From, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        command.Parameters.Add(new NpgsqlParameter { Value = query.Window.To, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        if (query.AccountId is { } accountId)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = accountId, NpgsqlDbType = NpgsqlDbType.Varchar });
            sql.Append(CultureInfo.InvariantCulture, $" AND account_id = ${command.Parameters.Count}");
        }

        if (query.ServiceIds is { } serviceIds)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = serviceIds.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Varchar });
            sql.Append(CultureInfo.InvariantCulture, $" AND service_id = ANY(${command.Parameters.Count})");
        }

        if (query.WithAccountOnly)
        {
            sql.Append(" AND account_id <> ''");
        }

        sql.Append(" GROUP BY 1, 2");
        sql.Append(query.Top is { } top
            ? string.Create(CultureInfo.InvariantCulture, $" ORDER BY 3 DESC, 4 DESC, 1, 2 LIMIT {top}")
            : " ORDER BY 1, 2");
        command.CommandText = sql.ToString();
        return command;
    }

    /// <summary>
    /// Estimates the <paramref name="q"/> quantile (0..1) of latency from a histogram: the bucket that holds it, then a linear
    /// interpolation inside the bucket. The overflow bucket answers its lower bound (the last bound). 0 for an empty histogram.
    /// </summary>
    public static double Percentile(IReadOnlyList<long> buckets, double q)
    {
        var bounds = CallLogWriter.LatencyBoundsMs;
        var total = buckets.Sum();
        if (total == 0)
        {
            return 0;
        }

        var target = q * total;
        long below = 0;
        for (var b = 0; b < buckets.Count; b++)
        {
            if (buckets[b] > 0 && below + buckets[b] >= target)
            {
                double lower = b == 0 ? 0 : bounds[b - 1];
                if (b >= bounds.Count)
                {
                    return lower;
                }

                var fraction = Math.Clamp((target - below) / buckets[b], 0, 1);
                return Math.Round(lower + ((bounds[b] - lower) * fraction), 2);
            }

            below += buckets[b];
        }

        return bounds[^1];
    }

    /// <summary>
    /// Validates a report window. <paramref name="granularity"/> defaults to the coarsest one both ends are aligned to; the
    /// window is widened to whole buckets (from rounded down, to rounded up). Without <paramref name="to"/> the window ends
    /// at the end of the current bucket; without <paramref name="from"/> it spans one day before <paramref name="to"/>.
    /// </summary>
    public static ReportWindow? ParseWindow(string? from, string? to, string? granularity, DateTimeOffset now, IDictionary<string, string[]> errors)
    {
        var start = ParseInstant(from, "from", errors);
        var end = ParseInstant(to, "to", errors);
        if (granularity is not null && !MaxRange.ContainsKey(granularity))
        {
            errors["granularity"] = ["granularity is minute, hour or day."];
        }

        if (errors.Count > 0)
        {
            return null;
        }

        granularity ??= Array.Find(["day", "hour"], g => (start is null || Aligned(start.Value, g)) && (end is null || Aligned(end.Value, g))) ?? "minute";
        var endAt = Ceiling(end ?? Floor(now, granularity).Add(Unit(granularity)), granularity);
        var startAt = Floor(start ?? endAt.AddDays(-1), granularity);
        if (startAt >= endAt)
        {
            errors["from"] = ["from must be before to."];
            return null;
        }

        if (endAt - startAt > MaxRange[granularity])
        {
            errors["to"] = [$"A report by {granularity} spans at most {MaxRange[granularity].TotalDays:0} days; choose a coarser granularity or a shorter range."];
            return null;
        }

        return new ReportWindow(startAt, endAt, granularity);
    }

    private static DateTimeOffset? ParseInstant(string? value, string name, IDictionary<string, string[]> errors)
    {
        if (value is null)
        {
            return null;
        }

        if (DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var instant)
            && instant.Year is >= 2000 and <= 9000)
        {
            return instant.ToUniversalTime();
        }

        errors[name] = [$"{name} is an ISO 8601 date or date and time, e.g. 2026-11-24 or 2026-11-24T13:00:00Z."];
        return null;
    }

    private static TimeSpan Unit(string granularity) => granularity switch
    {
        "minute" => TimeSpan.FromMinutes(1),
        "hour" => TimeSpan.FromHours(1),
        _ => TimeSpan.FromDays(1),
    };

    private static DateTimeOffset Floor(DateTimeOffset instant, string granularity)
    {
        var utc = instant.ToUniversalTime();
        return new DateTimeOffset(utc.Ticks - (utc.Ticks % Unit(granularity).Ticks), TimeSpan.Zero);
    }

    private static DateTimeOffset Ceiling(DateTimeOffset instant, string granularity) =>
        Aligned(instant, granularity) ? instant.ToUniversalTime() : Floor(instant, granularity).Add(Unit(granularity));

    private static bool Aligned(DateTimeOffset instant, string granularity) => instant.UtcTicks % Unit(granularity).Ticks == 0;

    private static string? ParseChoice(string? value, string name, string[] choices, IDictionary<string, string[]> errors)
    {
        value ??= choices[0];
        if (choices.Contains(value, StringComparer.Ordinal))
        {
            return value;
        }

        errors[name] = [$"{name} is one of: {string.Join(", ", choices)}."];
        return null;
    }

    private static bool ParseFormat(string? format, IDictionary<string, string[]> errors)
    {
        switch (format)
        {
            case null or "json":
                return false;
            case "csv":
                return true;
            default:
                errors["format"] = ["format is json or csv."];
                return false;
        }
    }

    // Every service of the provider, whatever its status: retired services' past calls still count.
    private static async Task<IReadOnlyList<string>> ProviderServicesAsync(IGrainFactory grains, string providerId)
    {
        var catalog = grains.GetGrain<ICatalogGrain>(ICatalogGrain.Default);
        var ids = new List<string>();
        for (var page = 1; ; page++)
        {
            var found = await catalog.SearchAsync(new CatalogQuery(ProviderId: providerId, Page: page, PageSize: CatalogGrain.MaxPageSize));
            ids.AddRange(found.Items.Select(item => item.Id));
            if (found.Items.Count < CatalogGrain.MaxPageSize || ids.Count >= found.Total)
            {
                return ids;
            }
        }
    }

    private static ReportRow Combine(IReadOnlyList<ReportRow> rows)
    {
        var histogram = new long[CallLogWriter.LatencyBoundsMs.Count + 1];
        foreach (var row in rows)
        {
            for (var b = 0; b < histogram.Length; b++)
            {
                histogram[b] += row.LatencyBuckets[b];
            }
        }

        return new ReportRow(string.Empty, string.Empty, rows.Sum(r => r.Calls), 0, rows.Sum(r => r.Failed), histogram);
    }

    private static ContentHttpResult Csv(string[] header, IEnumerable<object[]> lines)
    {
        var text = new StringBuilder();
        text.AppendJoin(',', header).Append("\r\n");
        foreach (var line in lines)
        {
            text.AppendJoin(',', line.Select(Field)).Append("\r\n");
        }

        return TypedResults.Text(text.ToString(), "text/csv", Encoding.UTF8);
    }

    // RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
    private static string Field(object value)
    {
        var text = value switch
        {
            double d => d.ToString("0.####", CultureInfo.InvariantCulture),
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString() ?? string.Empty,
        };
        return text.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : text;
    }
}
