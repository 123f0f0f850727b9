using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Silo.Tests.Reports;

/// <summary>Usage rollups against the call log, and the consumer, provider and admin reports that read them.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ReportsHttpTests(ReportsFixture fixture) : IClassFixture<ReportsFixture>
{
    private static readonly int _buckets = CallLogWriter.LatencyBoundsMs.Count + 1;

    [Fact]
    public async Task Rollups_AfterMixedCalls_EqualACountOfTheCallLogAtEveryGranularity()
    {
        var scenario = await fixture.ScenarioAsync();

        // One statement, so the log and the rollups are read in one snapshot even if a flush commits meanwhile.
        var histogram = string.Join(", ", Enumerable.Range(0, _buckets).Select(b =>
            $"count(*) FILTER (WHERE width_bucket(total_ms, '{{{string.Join(',', CallLogWriter.LatencyBoundsMs)}}}'::real[]) = {b})"));
        var summed = string.Join(", ", Enumerable.Range(1, _buckets).Select(b => $"sum(latency_buckets[{b}])"));
        await using var command = fixture.Database.CreateCommand($"""
            WITH log AS (
                SELECT date_trunc('day', at, 'UTC') AS day, coalesce(account_id, '') AS account_id, coalesce(key_id, '') AS key_id, service_id,
                       coalesce(version, '') AS version, outcome, coalesce(rtrim(currency), '') AS currency,
                       count(*) AS calls, sum(charged) AS charged, ARRAY[{histogram}] AS latency
                FROM marketplace_call_log GROUP BY 1, 2, 3, 4, 5, 6, 7
            ), rollup AS (
                SELECT granularity, date_trunc('day', bucket_start, 'UTC') AS day, account_id, key_id, service_id, version, outcome, currency,
                       sum(calls) AS calls, sum(charged) AS charged, ARRAY[{summed}]::bigint[] AS latency
                FROM marketplace_usage_rollup GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
            ), granularities AS (SELECT unnest(ARRAY['minute', 'hour', 'day']) AS granularity)
            SELECT g.granularity,
                   (SELECT count(*) FROM rollup r WHERE r.granularity = g.granularity),
                   (SELECT count(*) FROM ((SELECT * FROM log) EXCEPT (SELECT day, account_id, key_id, service_id, version, outcome, currency, calls, charged, latency
                                                                      FROM rollup r WHERE r.granularity = g.granularity)) AS missing),
                   (SELECT count(*) FROM ((SELECT day, account_id, key_id, service_id, version, outcome, currency, calls, charged, latency
                                           FROM rollup r WHERE r.granularity = g.granularity) EXCEPT (SELECT * FROM log)) AS extra),
                   (SELECT count(*) FROM log)
            FROM granularities g ORDER BY 1
            """);
        var results = new List<(string Granularity, long Groups, long Missing, long Extra, long LogGroups)>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                results.Add((reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4)));
            }
        }

        Assert.Equal(["day", "hour", "minute"], results.Select(r => r.Granularity));
        foreach (var result in results)
        {
            // The run has 7 distinct (account, key, service, version, outcome) combinations.
            Assert.True(result.LogGroups >= 7, $"the call log has only {result.LogGroups} groups");
            Assert.True(result.Missing == 0 && result.Extra == 0 && result.Groups == result.LogGroups,
                $"{result.Granularity}: {result.Missing} log groups missing from the rollups, {result.Extra} rollup groups not in the log ({result.Groups} vs {result.LogGroups})");
        }

        var day = await DayRowsAsync(scenario.S1, scenario.Ka1.AccountId);
        Assert.Equal((7L, 49L), day["succeeded"]);
        Assert.Equal((1L, 0L), day["upstreamRejected"]);
    }

    [Fact]
    public async Task ServiceRollups_AfterMixedCalls_EqualThePerAccountRollupsSummedAtEveryGranularity()
    {
        await fixture.ScenarioAsync();
        var summed = string.Join(", ", Enumerable.Range(1, _buckets).Select(b => $"sum(latency_buckets[{b}])"));

        // One statement: one snapshot of both tables.
        await using var command = fixture.Database.CreateCommand($"""
            WITH account_rows AS (
                SELECT granularity, bucket_start, service_id, version, outcome, currency, sum(calls) AS calls, sum(charged) AS charged,
                       ARRAY[{summed}]::bigint[] AS latency
                FROM marketplace_usage_rollup GROUP BY 1, 2, 3, 4, 5, 6
            ), service_rows AS (
                SELECT granularity, bucket_start, service_id, version, outcome, currency, calls::numeric, charged::numeric, latency_buckets
                FROM marketplace_usage_service_rollup
            )
            SELECT g.granularity,
                   (SELECT count(*) FROM service_rows r WHERE r.granularity = g.granularity),
                   (SELECT count(*) FROM ((SELECT * FROM account_rows) EXCEPT (SELECT * FROM service_rows)) AS d WHERE d.granularity = g.granularity),
                   (SELECT count(*) FROM ((SELECT * FROM service_rows) EXCEPT (SELECT * FROM account_rows)) AS d WHERE d.granularity = g.granularity)
            FROM (SELECT unnest(ARRAY['day', 'hour', 'minute']) AS granularity) g ORDER BY 1
            """);
        var results = new List<(string Granularity, long Rows, long Missing, long Extra)>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                results.Add((reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3)));
            }
        }

        Assert.Equal(3, results.Count);
        foreach (var result in results)
        {
            Assert.True(result.Rows > 0, $"{result.Granularity}: no per-service rows");
            Assert.True(result.Missing == 0 && result.Extra == 0,
                $"{result.Granularity}: {result.Missing} summed per-account rows missing from the per-service rows, {result.Extra} per-service rows without them");
        }
    }

    [Fact]
    public async Task Reports_ServiceRowsAndAccountRows_GiveTheSameNumbers()
    {
        var s = await fixture.ScenarioAsync();
        var today = DateTimeOffset.UtcNow.Date;
        var services = new[] { s.S1, s.S2, s.S3 };
        foreach (var granularity in new[] { "day", "hour", "minute" })
        {
            var window = new ReportWindow(new DateTimeOffset(today.AddDays(granularity == "day" ? -1 : 0), TimeSpan.Zero), new DateTimeOffset(today.AddDays(1), TimeSpan.Zero), granularity);
            foreach (var query in new[]
            {
                new ReportQuery(window, "total"),
                new ReportQuery(window, "version", ServiceIds: services),
                new ReportQuery(window, "bucket", ServiceIds: services, Latency: false),
                new ReportQuery(window, "service", Top: 10, Latency: false),
            })
            {
                Assert.True(query.ReadsServiceRows);
                var fromServiceRows = await ReportsApi.QueryAsync(fixture.Database, query, CancellationToken.None);
                var fromAccountRows = await ReportsApi.QueryAsync(fixture.Database, query with { PerAccountRows = true }, CancellationToken.None);
                Assert.NotEmpty(fromServiceRows);
                Assert.Equal(Describe(fromAccountRows), Describe(fromServiceRows));
            }
        }

        static string[] Describe(IReadOnlyList<ReportRow> rows) =>
            [.. rows.Select(r => $"{r.Group} {r.Currency} {r.Calls} {r.Charged} {r.Failed} {string.Join(',', r.LatencyBuckets)}")];
    }

    [Fact]
    public async Task UsageReport_Consumer_SeesOnlyItsOwnAccountsCalls()
    {
        var s = await fixture.ScenarioAsync();
        var idle = await fixture.CreateIdleConsumerAsync(s.S1);

        var byService = await UsageAsync(s.Ka1.ApiKey, $"groupBy=service&{Scenario.Window}");
        var byKey = await UsageAsync(s.Ka2.ApiKey, $"groupBy=key&{Scenario.Window}");
        var other = await UsageAsync(s.Kb.ApiKey, $"groupBy=service&{Scenario.Window}");
        var none = await UsageAsync(idle.ApiKey, $"groupBy=service&{Scenario.Window}");
        var anonymous = await fixture.GetAsync($"/v1/reports/usage?{Scenario.Window}", null);

        Assert.Equal("day", byService.GetProperty("granularity").GetString());
        var services = Rows(byService);
        Assert.Equal([s.S1, s.S2], services.Keys.Order());
        Assert.Equal((8L, 49L, 1L), Totals(services[s.S1]));
        Assert.Equal((2L, 0L, 2L), Totals(services[s.S2]));
        Assert.Equal("EUR", services[s.S1].GetProperty("currency").GetString());
        var keys = Rows(byKey);
        Assert.Equal(new[] { s.Ka1.KeyId, s.Ka2.KeyId }.Order(), keys.Keys.Order());
        Assert.Equal((6L, 28L, 2L), Totals(keys[s.Ka1.KeyId]));
        Assert.Equal((4L, 21L, 1L), Totals(keys[s.Ka2.KeyId]));
        var others = Rows(other);
        Assert.Equal([s.S1, s.S3], others.Keys.Order());
        Assert.Equal((2L, 14L, 0L), Totals(others[s.S1]));
        Assert.Equal((3L, 9L, 0L), Totals(others[s.S3]));
        Assert.Empty(Rows(none));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.Status);

        // The percentiles are those of the account's latency histogram in the call log.
        var logHistogram = await LogHistogramAsync(s.Ka1.AccountId, s.S1);
        var row = services[s.S1];
        Assert.Equal(ReportsApi.Percentile(logHistogram, 0.50), row.GetProperty("p50Ms").GetDouble());
        Assert.Equal(ReportsApi.Percentile(logHistogram, 0.99), row.GetProperty("p99Ms").GetDouble());
        Assert.True(row.GetProperty("p50Ms").GetDouble() <= row.GetProperty("p95Ms").GetDouble());
        Assert.True(row.GetProperty("p95Ms").GetDouble() <= row.GetProperty("p99Ms").GetDouble());
    }

    [Fact]
    public async Task UsageReport_EveryGranularity_SameTotals()
    {
        var s = await fixture.ScenarioAsync();
        var now = DateTime.UtcNow;
        var minutes = $"from={now.AddHours(-1):yyyy-MM-ddTHH:mm}:00Z&to={now.AddMinutes(2):yyyy-MM-ddTHH:mm}:00Z";

        var byDay = await UsageAsync(s.Ka1.ApiKey, $"groupBy=service&granularity=day&{Scenario.Window}");
        var byHour = await UsageAsync(s.Ka1.ApiKey, $"groupBy=service&granularity=hour&{Scenario.Window}");
        var byMinute = await UsageAsync(s.Ka1.ApiKey, $"groupBy=service&granularity=minute&{minutes}");
        var series = await UsageAsync(s.Ka1.ApiKey, $"groupBy=bucket&granularity=minute&{minutes}");

        Assert.Equal("hour", byHour.GetProperty("granularity").GetString());
        Assert.Equal("minute", byMinute.GetProperty("granularity").GetString());
        Assert.Equal(Totals(Rows(byDay)[s.S1]), Totals(Rows(byHour)[s.S1]));
        Assert.Equal(Totals(Rows(byDay)[s.S1]), Totals(Rows(byMinute)[s.S1]));
        Assert.Equal(10L, Rows(series).Values.Sum(r => r.GetProperty("calls").GetInt64()));
        Assert.All(Rows(series).Keys, bucket => Assert.Matches(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$", bucket));
    }

    [Fact]
    public async Task RevenueReport_Provider_SeesOnlyItsOwnServices()
    {
        var s = await fixture.ScenarioAsync();

        var p1 = await ReportsFixture.ReadOkAsync(s.P1.Client, $"/provider/reports/revenue?groupBy=service&{Scenario.Window}");
        var p2 = await ReportsFixture.ReadOkAsync(s.P2.Client, $"/provider/reports/revenue?groupBy=service&{Scenario.Window}");
        var versions = await ReportsFixture.ReadOkAsync(s.P1.Client, $"/provider/reports/revenue?groupBy=version&{Scenario.Window}");
        var days = await ReportsFixture.ReadOkAsync(s.P2.Client, $"/provider/reports/revenue?groupBy=day&{Scenario.Window}");
        var anonymous = await fixture.GetAsync($"/provider/reports/revenue?{Scenario.Window}", null);

        var own = Rows(p1);
        Assert.Equal([s.S1, s.S2], own.Keys.Order());
        Assert.Equal((12L, 63L, 3L), Revenue(own[s.S1]));
        Assert.Equal((2L, 0L, 2L), Revenue(own[s.S2]));
        Assert.Equal(1.0, own[s.S2].GetProperty("errorRate").GetDouble());
        Assert.Equal(0.25, own[s.S1].GetProperty("errorRate").GetDouble());
        var other = Rows(p2);
        Assert.Equal([s.S3], other.Keys);
        Assert.Equal((3L, 9L, 0L), Revenue(other[s.S3]));
        var byVersion = Rows(versions);
        Assert.Equal((10L, 63L, 1L), Revenue(byVersion[$"{s.S1}/v1"]));
        Assert.Equal((2L, 0L, 2L), Revenue(byVersion[$"{s.S1}/"])); // rejected before a version was chosen
        Assert.Equal(3L, Rows(days).Values.Sum(r => r.GetProperty("calls").GetInt64()));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.Status);
    }

    [Fact]
    public async Task AdminReports_SummaryAndTop_MatchTheCallLog()
    {
        var s = await fixture.ScenarioAsync();
        var from = DateTime.UtcNow.Date.AddDays(-1);
        var to = from.AddDays(3);

        var summary = await ReportsFixture.ReadOkAsync(fixture.M.Admin, $"/admin/reports/summary?{Scenario.Window}");
        var consumers = await ReportsFixture.ReadOkAsync(fixture.M.Admin, $"/admin/reports/top?by=consumers&limit=2&{Scenario.Window}");
        var services = await ReportsFixture.ReadOkAsync(fixture.M.Admin, $"/admin/reports/top?by=services&{Scenario.Window}");
        await using var command = fixture.Database.CreateCommand(
            "SELECT count(*), coalesce(sum(charged), 0)::bigint, count(*) FILTER (WHERE outcome <> 'succeeded') FROM marketplace_call_log WHERE at >= $1 AND at < $2");
        command.Parameters.AddWithValue(new DateTimeOffset(from));
        command.Parameters.AddWithValue(new DateTimeOffset(to));
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        var (calls, charged, failed) = (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2));

        Assert.True(calls >= s.TrackIds.Count);
        Assert.Equal(calls, summary.GetProperty("calls").GetInt64());
        Assert.Equal(failed, summary.GetProperty("failed").GetInt64());
        Assert.Equal(Math.Round((double)failed / calls, 4), summary.GetProperty("errorRate").GetDouble());
        Assert.Equal(charged, summary.GetProperty("rows").EnumerateArray().Sum(r => r.GetProperty("charged").GetInt64()));
        Assert.Equal(charged, summary.GetProperty("rows").EnumerateArray().Single(r => r.GetProperty("currency").GetString() == "EUR").GetProperty("charged").GetInt64());
        Assert.True(summary.GetProperty("p99Ms").GetDouble() >= summary.GetProperty("p50Ms").GetDouble());
        var topConsumers = consumers.GetProperty("rows").EnumerateArray().Select(r => (r.GetProperty("rank").GetInt32(), r.GetProperty("id").GetString(), r.GetProperty("calls").GetInt64())).ToList();
        Assert.Equal([(1, s.Ka1.AccountId, 10L), (2, s.Kb.AccountId, 5L)], topConsumers);
        var topServices = services.GetProperty("rows").EnumerateArray().Select(r => (r.GetProperty("id").GetString(), r.GetProperty("calls").GetInt64())).ToList();
        Assert.Equal([(s.S1, 12L), (s.S3, 3L), (s.S2, 2L)], topServices);
    }

    [Fact]
    public async Task Reports_Csv_HeaderAndTheSameNumbersAsJson()
    {
        var s = await fixture.ScenarioAsync();

        var json = Rows(await UsageAsync(s.Ka1.ApiKey, $"groupBy=service&{Scenario.Window}"));
        var csv = await fixture.GetAsync($"/v1/reports/usage?groupBy=service&format=csv&{Scenario.Window}", s.Ka1.ApiKey);
        using var revenueResponse = await s.P1.Client.GetAsync($"/provider/reports/revenue?groupBy=service&format=csv&{Scenario.Window}");
        var revenue = await revenueResponse.Content.ReadAsStringAsync();
        using var summaryResponse = await fixture.M.Admin.GetAsync($"/admin/reports/summary?format=csv&{Scenario.Window}");
        var summary = await summaryResponse.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, csv.Status);
        Assert.Equal("text/csv", csv.MediaType);
        var lines = csv.Body.Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("group,currency,calls,charged,failed,p50_ms,p95_ms,p99_ms", lines[0]);
        Assert.Equal(json.Count, lines.Length - 1);
        foreach (var line in lines.Skip(1))
        {
            var f = line.Split(',');
            var row = json[f[0]];
            Assert.Equal(row.GetProperty("currency").GetString(), f[1]);
            Assert.Equal(Totals(row), (long.Parse(f[2], CultureInfo.InvariantCulture), long.Parse(f[3], CultureInfo.InvariantCulture), long.Parse(f[4], CultureInfo.InvariantCulture)));
            Assert.Equal(row.GetProperty("p50Ms").GetDouble(), double.Parse(f[5], CultureInfo.InvariantCulture));
            Assert.Equal(row.GetProperty("p99Ms").GetDouble(), double.Parse(f[7], CultureInfo.InvariantCulture));
        }

        Assert.Equal("text/csv", revenueResponse.Content.Headers.ContentType?.MediaType);
        Assert.StartsWith("group,currency,calls,revenue,failed,error_rate\r\n", revenue);
        Assert.Contains($"{s.S1},EUR,12,63,3,0.25\r\n", revenue);
        Assert.StartsWith("currency,calls,charged,failed,error_rate,p50_ms,p95_ms,p99_ms\r\n", summary);
    }

    [Theory]
    [InlineData("consumer", "from=2026-01-02&to=2026-01-01", "from")]
    [InlineData("consumer", "from=2026-01-01&to=2026-01-01", "from")]
    [InlineData("consumer", "granularity=minute&from=2026-01-01&to=2026-01-03T00:01:00Z", "to")]
    [InlineData("consumer", "granularity=hour&from=2026-01-01&to=2026-04-02", "to")]
    [InlineData("consumer", "granularity=week", "granularity")]
    [InlineData("consumer", "groupBy=version", "groupBy")]
    [InlineData("consumer", "format=xml", "format")]
    [InlineData("consumer", "from=yesterday", "from")]
    [InlineData("provider", "groupBy=key", "groupBy")]
    [InlineData("provider", "from=2026-01-02T10:00:00Z&to=2026-01-02T09:00:00Z", "from")]
    [InlineData("summary", "from=2026-01-01T00:00:00Z&to=2026-01-05T00:00:30Z", "to")]
    [InlineData("top", "by=keys", "by")]
    [InlineData("top", "limit=0", "limit")]
    public async Task Reports_BadInput_Answer400WithTheField(string endpoint, string query, string field)
    {
        var s = await fixture.ScenarioAsync();

        using var response = endpoint switch
        {
            "consumer" => await SendAsync(fixture.M.Anonymous, $"/v1/reports/usage?{query}", s.Ka1.ApiKey),
            "provider" => await s.P1.Client.GetAsync($"/provider/reports/revenue?{query}"),
            "summary" => await fixture.M.Admin.GetAsync($"/admin/reports/summary?{query}"),
            _ => await fixture.M.Admin.GetAsync($"/admin/reports/top?{query}"),
        };

        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
    }

    [Fact]
    public async Task Writer_BatchCommittedThenRetried_ChangesNoRowTotalOrRollup()
    {
        var account = "racct-dup-" + Guid.NewGuid().ToString("N")[..8];
        var key = "dupkey-" + account;
        var service = "svc-dup-" + account;
        var at = new DateTimeOffset(2020, 3, 1, 10, 15, 30, TimeSpan.Zero);
        var batch = Enumerable.Range(0, 5).Select(i => new CallRecord(Guid.CreateVersion7(at.AddSeconds(i * 20)),
            $"dup-{account}-{i}", at.AddSeconds(i * 20), account, key, service, "v1", CallOutcome.Succeeded, null, 200, 2.5, 3.0 + i, 4, 4, "EUR", null)).ToList();
        var extra = batch[0] with { CallId = Guid.CreateVersion7(at), TotalMs = 40_000 };
        var sender = Guid.NewGuid();

        Assert.True(await JournalBatch.WriteAsync(fixture.Database, sender, 1, batch, CancellationToken.None));
        var afterFirst = await SnapshotAsync(account, key, service);
        // The retry of a batch whose commit answer was lost, and the same batch sent again: nothing changes.
        Assert.False(await JournalBatch.WriteAsync(fixture.Database, sender, 1, batch, CancellationToken.None));
        Assert.False(await JournalBatch.WriteAsync(fixture.Database, sender, 1, batch, CancellationToken.None));
        Assert.Equal(afterFirst, await SnapshotAsync(account, key, service));
        // The next batch counts; after it, late retries of either batch change nothing either.
        Assert.True(await JournalBatch.WriteAsync(fixture.Database, sender, 2, [extra], CancellationToken.None));
        var afterSecond = await SnapshotAsync(account, key, service);
        Assert.False(await JournalBatch.WriteAsync(fixture.Database, sender, 1, batch, CancellationToken.None));
        Assert.False(await JournalBatch.WriteAsync(fixture.Database, sender, 2, [extra], CancellationToken.None));
        Assert.Equal(afterSecond, await SnapshotAsync(account, key, service));

        // The extra call has batch[0]'s TrackId and start time: a call of its own all the same.
        Assert.Equal("log 6/24; account 6/6/0/24; key 6/6/0/24; service 6/6/0/24", afterSecond.Split(" | ")[0]);
        var rows = await RollupAsync(account);
        Assert.Equal(6L, rows[("day", at.Date)].Calls);
        Assert.Equal(24L, rows[("day", at.Date)].Charged);
        Assert.Equal(6L, rows[("hour", at.Date.AddHours(10))].Calls);
        Assert.Equal(3L, rows[("minute", at.Date.AddHours(10).AddMinutes(15))].Calls); // 10:15:30 twice and 10:15:50
        Assert.Equal(3L, rows[("minute", at.Date.AddHours(10).AddMinutes(16))].Calls); // 10:16:10, :30, :50
        Assert.Equal(4, rows.Count);
        // 3.0 and 4.0 ms are in [2,5), 5.0, 6.0 and 7.0 in [5,10), 40 s beyond the last bound.
        Assert.Equal([0, 0, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], rows[("day", at.Date)].Latency);
        var perService = await ReportsApi.QueryAsync(fixture.Database,
            new ReportQuery(new ReportWindow(at.Date, at.Date.AddDays(1), "day"), "service", ServiceIds: [service]), CancellationToken.None);
        Assert.Equal([(service, 6L, 24L)], perService.Select(r => (r.Group, r.Calls, r.Charged)));
    }

    [Fact]
    public async Task Writer_OneBatchSentByConcurrentAttempts_IsStoredOnce()
    {
        var account = "racct-race-" + Guid.NewGuid().ToString("N")[..8];
        var at = new DateTimeOffset(2020, 3, 2, 9, 0, 0, TimeSpan.Zero);
        var batch = Enumerable.Range(0, 50).Select(i => new CallRecord(Guid.CreateVersion7(at), $"race-{account}-{i}", at, account, "racekey-" + account,
            "svc-race-" + account, "v1", CallOutcome.Succeeded, null, 200, 1, 2, 5, 5, "EUR", null)).ToList();
        var sender = Guid.NewGuid();

        // An attempt abandoned by its timeout may still be running when the retry starts: the sender row decides.
        var committed = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ =>
            JournalBatch.WriteAsync(fixture.Database, sender, 1, batch, CancellationToken.None)));

        Assert.Single(committed, c => c);
        Assert.StartsWith("log 50/250; account 50/50/0/250; key 50/50/0/250; service 50/50/0/250",
            await SnapshotAsync(account, "racekey-" + account, "svc-race-" + account));
    }

    [Fact]
    public async Task CallLog_TwoCallsWithOneTrackIdInOneInstant_BothStoredAndCounted()
    {
        var account = "racct-twice-" + Guid.NewGuid().ToString("N")[..8];
        var at = new DateTimeOffset(2020, 4, 2, 8, 0, 0, TimeSpan.Zero);
        var record = new CallRecord(Guid.CreateVersion7(at), $"twice-{account}", at, account, "twicekey-" + account, "svc-twice-" + account, "v1",
            CallOutcome.Succeeded, null, 200, 1, 1.5, 6, 6, "EUR", null);
        var writer = fixture.M.Host.App.Services.GetRequiredService<CallLogWriter>();
        var written = writer.Written;

        // Same TrackId, same start: before call ids, the log's key (track_id, at) dropped the second row and kept its charge.
        await writer.WriteAsync(record, CancellationToken.None);
        await writer.WriteAsync(record with { CallId = Guid.CreateVersion7(at) }, CancellationToken.None);
        var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
        while (writer.Written < written + 2)
        {
            Assert.True(DateTimeOffset.UtcNow < until, "The writer did not flush both records in time.");
            await Task.Delay(20);
        }

        var rows = await RollupAsync(account);
        Assert.Equal(3, rows.Count);
        Assert.All(rows.Values, row => Assert.Equal((2L, 12L), (row.Calls, row.Charged)));
        Assert.StartsWith("log 2/12; account 2/2/0/12", await SnapshotAsync(account, "twicekey-" + account, "svc-twice-" + account));
    }

    [Fact]
    public async Task Totals_AfterMixedCalls_EqualTheSumsOfTheCallLogAndTheGrainCounters()
    {
        var s = await fixture.ScenarioAsync();

        // One statement per table: the log and its totals in one snapshot. Totals count settled calls (rows with an account).
        foreach (var (table, keyColumns) in new[]
        {
            ("marketplace_account_totals", "account_id, coalesce(rtrim(currency), '')"),
            ("marketplace_key_totals", "key_id, service_id, coalesce(rtrim(currency), '')"),
            ("marketplace_service_totals", "service_id, coalesce(rtrim(currency), '')"),
        })
        {
            var columns = table switch
            {
                "marketplace_account_totals" => "account_id, currency",
                "marketplace_key_totals" => "key_id, service_id, currency",
                _ => "service_id, currency",
            };
            await using var command = fixture.Database.CreateCommand($"""
                WITH log AS (
                    SELECT {keyColumns}, count(*) AS calls, count(*) FILTER (WHERE charged > 0) AS charged_calls,
                           count(*) FILTER (WHERE outcome <> 'succeeded') AS failed, sum(charged)::bigint AS charged
                    FROM marketplace_call_log WHERE account_id IS NOT NULL GROUP BY {keyColumns}
                ), totals AS (SELECT {columns}, calls, charged_calls, failed, charged FROM {table})
                SELECT (SELECT count(*) FROM (SELECT * FROM log EXCEPT SELECT * FROM totals) AS missing),
                       (SELECT count(*) FROM (SELECT * FROM totals EXCEPT SELECT * FROM log) AS extra),
                       (SELECT count(*) FROM log)
                """);
            await using var reader = await command.ExecuteReaderAsync();
            await reader.ReadAsync();
            var (missing, extra, groups) = (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2));
            Assert.True(groups >= 2, $"{table}: the log has only {groups} groups"); // the scenario: 2 accounts, 3 keys, 3 services
            Assert.True(missing == 0 && extra == 0, $"{table}: {missing} log sums missing from the totals, {extra} totals not in the log");
        }

        // And the grains count what the totals say (the grains settle behind: read until they agree).
        foreach (var consumer in new[] { s.Ka1, s.Ka2, s.Kb })
        {
            var totals = await SnapshotAsync(consumer.AccountId, consumer.KeyId, s.S1);
            var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
            while (true)
            {
                var account = JsonDocument.Parse(await fixture.M.Admin.GetStringAsync($"/admin/accounts/{consumer.AccountId}")).RootElement;
                var usage = account.GetProperty("usage");
                var grain = $"account {usage.GetProperty("calls").GetInt64()}/{usage.GetProperty("charged").GetInt64()}/" +
                    $"{usage.GetProperty("failed").GetInt64()}/{account.GetProperty("totalCharged").GetInt64()}";
                var expected = totals.Split("; ")[1];
                if (grain == expected)
                {
                    break;
                }

                Assert.True(DateTimeOffset.UtcNow < until, $"{consumer.AccountId}: grain {grain}, totals {expected}");
                await Task.Delay(20);
            }
        }
    }

    // The log, the three totals and the rollups of one account, key and service, as one comparable string.
    private async Task<string> SnapshotAsync(string accountId, string keyId, string serviceId)
    {
        await using var command = fixture.Database.CreateCommand("""
            SELECT (SELECT 'log ' || count(*) || '/' || coalesce(sum(charged), 0) FROM marketplace_call_log WHERE account_id = $1)
                   || '; account ' || coalesce((SELECT string_agg(calls || '/' || charged_calls || '/' || failed || '/' || charged, ',')
                                                FROM marketplace_account_totals WHERE account_id = $1), '-')
                   || '; key ' || coalesce((SELECT string_agg(calls || '/' || charged_calls || '/' || failed || '/' || charged, ',')
                                            FROM marketplace_key_totals WHERE key_id = $2 AND service_id = $3), '-')
                   || '; service ' || coalesce((SELECT string_agg(calls || '/' || charged_calls || '/' || failed || '/' || charged, ',')
                                                FROM marketplace_service_totals WHERE service_id = $3), '-')
                   || ' | ' || coalesce((SELECT string_agg(granularity || bucket_start || ':' || calls || '/' || charged || '/' || latency_buckets::text, ','
                                                           ORDER BY granularity, bucket_start) FROM marketplace_usage_rollup WHERE account_id = $1), '-')
                   || ' | ' || coalesce((SELECT string_agg(granularity || bucket_start || ':' || calls || '/' || charged || '/' || latency_buckets::text, ','
                                                           ORDER BY granularity, bucket_start) FROM marketplace_usage_service_rollup WHERE service_id = $3), '-')
            """);
        command.Parameters.AddWithValue(accountId);
        command.Parameters.AddWithValue(keyId);
        command.Parameters.AddWithValue(serviceId);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private async Task<JsonElement> UsageAsync(string apiKey, string query)
    {
        var (status, _, body) = await fixture.GetAsync($"/v1/reports/usage?{query}", apiKey);
        Assert.True(status == HttpStatusCode.OK, $"GET /v1/reports/usage?{query} answered {(int)status}: {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    private static async Task<HttpResponseMessage> SendAsync(HttpClient client, string path, string apiKey)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.TryAddWithoutValidation("X-Api-Key", apiKey);
        return await client.SendAsync(request);
    }

    private static Dictionary<string, JsonElement> Rows(JsonElement report) =>
        report.GetProperty("rows").EnumerateArray().ToDictionary(r => r.GetProperty("group").GetString()!);

    private static (long Calls, long Charged, long Failed) Totals(JsonElement row) =>
        (row.GetProperty("calls").GetInt64(), row.GetProperty("charged").GetInt64(), row.GetProperty("failed").GetInt64());

    private static (long Calls, long Revenue, long Failed) Revenue(JsonElement row) =>
        (row.GetProperty("calls").GetInt64(), row.GetProperty("revenue").GetInt64(), row.GetProperty("failed").GetInt64());

    // The day rows of one account and service, by outcome: (calls, charged).
    private async Task<Dictionary<string, (long Calls, long Charged)>> DayRowsAsync(string serviceId, string accountId)
    {
        await using var command = fixture.Database.CreateCommand(
            "SELECT outcome, sum(calls)::bigint, sum(charged)::bigint FROM marketplace_usage_rollup " +
            "WHERE granularity = 'day' AND service_id = $1 AND account_id = $2 GROUP BY outcome");
        command.Parameters.AddWithValue(serviceId);
        command.Parameters.AddWithValue(accountId);
        var rows = new Dictionary<string, (long, long)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows[reader.GetString(0)] = (reader.GetInt64(1), reader.GetInt64(2));
        }

        return rows;
    }

    // The latency histogram of an account's calls to a service, counted from the call log.
    private async Task<long[]> LogHistogramAsync(string accountId, string serviceId)
    {
        await using var command = fixture.Database.CreateCommand(
            $"SELECT width_bucket(total_ms, '{{{string.Join(',', CallLogWriter.LatencyBoundsMs)}}}'::real[]), count(*) FROM marketplace_call_log " +
            "WHERE account_id = $1 AND service_id = $2 GROUP BY 1");
        command.Parameters.AddWithValue(accountId);
        command.Parameters.AddWithValue(serviceId);
        var histogram = new long[_buckets];
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            histogram[reader.GetInt32(0)] = reader.GetInt64(1);
        }

        return histogram;
    }

    private async Task<Dictionary<(string Granularity, DateTime Start), (long Calls, long Charged, long[] Latency)>> RollupAsync(string accountId)
    {
        await using var command = fixture.Database.CreateCommand(
            "SELECT granularity, bucket_start, calls, charged, latency_buckets FROM marketplace_usage_rollup WHERE account_id = $1");
        command.Parameters.AddWithValue(accountId);
        var rows = new Dictionary<(string, DateTime), (long, long, long[])>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            var key = (reader.GetString(0), reader.GetFieldValue<DateTimeOffset>(1).UtcDateTime);
            Assert.False(rows.ContainsKey(key), $"two rollup rows for {key}");
            rows[key] = (reader.GetInt64(2), reader.GetInt64(3), reader.GetFieldValue<long[]>(4));
        }

        return rows;
    }
}
