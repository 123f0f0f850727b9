using Marketplace.Grains;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Silo.Database;

// The batch aggregated in memory: its rollup groups (minute, hour, day) and its totals with their latest windows, turned into
// one upsert per table.
public static partial class JournalBatch
{
    private static JournalSums Aggregate(IReadOnlyList<CallRecord> records)
    {
        var sums = new JournalSums();
        foreach (var r in records)
        {
            // As the rollups have always stored them: '' for a missing value, the currency without char(3) padding.
            var account = r.AccountId ?? string.Empty;
            var key = r.KeyId ?? string.Empty;
            var version = r.Version ?? string.Empty;
            var outcome = CallLogWriter.OutcomeName(r.Outcome);
            var currency = r.Currency?.TrimEnd() ?? string.Empty;
            var bucket = LatencyBucket(r.TotalMs);
            var at = r.At.UtcDateTime;
            foreach (var (granularity, start) in RollupBuckets(at))
            {
                sums.AddRollup(new RollupKey(granularity, start, account, key, r.ServiceId, version, outcome, currency), r.Charged, bucket);
            }

            if (r.AccountId is not null)
            {
                var failed = r.Outcome != CallOutcome.Succeeded;
                sums.AddTotals(r, currency, failed);
            }
        }

        return sums;
    }

    // The minute, hour and day (UTC) a call falls in, as date_trunc(granularity, at, 'UTC').
    private static (string Granularity, DateTime Start)[] RollupBuckets(DateTime at) =>
    [
        ("minute", new DateTime(at.Ticks - (at.Ticks % TimeSpan.TicksPerMinute), DateTimeKind.Utc)),
        ("hour", new DateTime(at.Ticks - (at.Ticks % TimeSpan.TicksPerHour), DateTimeKind.Utc)),
        ("day", new DateTime(at.Ticks - (at.Ticks % TimeSpan.TicksPerDay), DateTimeKind.Utc)),
    ];

    private readonly record struct RollupKey(
        string Granularity, DateTime Start, string Account, string Key, string Service, string Version, string Outcome, string Currency);

    private readonly record struct ServiceRollupKey(string Granularity, DateTime Start, string Service, string Version, string Outcome, string Currency);

    private sealed class RollupSums(int buckets)
    {
        public long Calls;
        public long Charged;
        public readonly long[] Latency = new long[buckets];

        public void Add(long calls, long charged, long[] latency)
        {
            Calls += calls;
            Charged += charged;
            for (var i = 0; i < latency.Length; i++)
            {
                Latency[i] += latency[i];
            }
        }
    }

    // The latest window (a day, or a month's first day) a row's calls fall in, and its calls: calls of an older window in the
    // same batch count nothing, that window is over.
    private struct WindowSums
    {
        public DateOnly Start;
        public long Calls;

        public void Add(DateOnly start)
        {
            if (start > Start)
            {
                Start = start;
                Calls = 1;
            }
            else if (start == Start)
            {
                Calls++;
            }
        }
    }

    private sealed class TotalSums
    {
        public long Calls;
        public long ChargedCalls;
        public long Failed;
        public long Charged;
        public WindowSums Day;
        public WindowSums Month;

        public void Add(long charged, bool failed, DateOnly day, DateOnly month)
        {
            Calls++;
            ChargedCalls += charged > 0 ? 1 : 0;
            Failed += failed ? 1 : 0;
            Charged += charged;
            Day.Add(day);
            Month.Add(month);
        }

        public WindowSums Window(string window) => window == DayWindow ? Day : Month;
    }

    // One batch's groups. Every table gets its rows in the order of its primary key (ordinal: the key columns are
    // COLLATE "C"), the order that keeps concurrent writers from deadlocking.
    private sealed class JournalSums
    {
        private readonly Dictionary<RollupKey, RollupSums> _rollups = [];
        private readonly Dictionary<(string Account, string Currency), TotalSums> _accounts = [];
        private readonly Dictionary<(string Key, string Service, string Currency), TotalSums> _keys = [];
        private readonly Dictionary<(string Service, string Currency), TotalSums> _services = [];
        private readonly Dictionary<string, string> _keyAccounts = new(StringComparer.Ordinal);

        public void AddRollup(RollupKey key, long charged, int bucket)
        {
            if (!_rollups.TryGetValue(key, out var sums))
            {
                sums = new RollupSums(Buckets);
                _rollups[key] = sums;
            }

            sums.Calls++;
            sums.Charged += charged;
            sums.Latency[bucket]++;
        }

        // A settled call: accounts count it in its UTC day and month, keys in the quota day and month of the key's offset.
        public void AddTotals(CallRecord r, string currency, bool failed)
        {
            var utcDay = JournalWindows.Day(r.At, 0);
            var utcMonth = new DateOnly(utcDay.Year, utcDay.Month, 1);
            Get(_accounts, (r.AccountId!, currency)).Add(r.Charged, failed, utcDay, utcMonth);
            if (r.KeyId is not null)
            {
                var day = r.WindowOffsetMinutes == 0 ? utcDay : JournalWindows.Day(r.At, r.WindowOffsetMinutes);
                Get(_keys, (r.KeyId, r.ServiceId, currency)).Add(r.Charged, failed, day, new DateOnly(day.Year, day.Month, 1));
                _keyAccounts[r.KeyId] = r.AccountId!;
            }

            Get(_services, (r.ServiceId, currency)).Add(r.Charged, failed, utcDay, utcMonth);
        }

        public void AddCommands(NpgsqlBatch batch, Guid sender, long sequence)
        {
            var rollups = _rollups.OrderBy(r => r.Key, RollupOrder.Instance).ToList();
            var command = batch.CreateBatchCommand();
            command.CommandText = AccountRollupSql;
            Add(command, rollups.Select(r => r.Key.Granularity));
            Add(command, rollups.Select(r => r.Key.Start));
            Add(command, rollups.Select(r => r.Key.Account));
            Add(command, rollups.Select(r => r.Key.Key));
            Add(command, rollups.Select(r => r.Key.Service));
            Add(command, rollups.Select(r => r.Key.Version));
            Add(command, rollups.Select(r => r.Key.Outcome));
            Add(command, rollups.Select(r => r.Key.Currency));
            AddSums(command, rollups.Select(r => r.Value).ToList());
            batch.BatchCommands.Add(command);

            AddTotals(batch, AccountTotalsSql, AccountWindows, _accounts.OrderBy(t => t.Key.Account, StringComparer.Ordinal).ThenBy(t => t.Key.Currency, StringComparer.Ordinal)
                .Select(t => (new[] { t.Key.Account, t.Key.Currency }, t.Value)).ToList());
            var keys = _keys.OrderBy(t => t.Key.Key, StringComparer.Ordinal).ThenBy(t => t.Key.Service, StringComparer.Ordinal)
                .ThenBy(t => t.Key.Currency, StringComparer.Ordinal).Select(t => (new[] { t.Key.Key, t.Key.Service, t.Key.Currency }, t.Value)).ToList();
            AddTotals(batch, KeyTotalsSql, KeyWindows, keys);
            AddKeyBatch(batch, sender, sequence, keys);

            var services = new Dictionary<ServiceRollupKey, RollupSums>();
            foreach (var (key, sums) in _rollups)
            {
                var serviceKey = new ServiceRollupKey(key.Granularity, key.Start, key.Service, key.Version, key.Outcome, key.Currency);
                Get(services, serviceKey, () => new RollupSums(Buckets)).Add(sums.Calls, sums.Charged, sums.Latency);
            }

            var serviceRollups = services.OrderBy(s => s.Key, ServiceRollupOrder.Instance).ToList();
            command = batch.CreateBatchCommand();
            command.CommandText = ServiceRollupSql;
            Add(command, serviceRollups.Select(r => r.Key.Granularity));
            Add(command, serviceRollups.Select(r => r.Key.Start));
            Add(command, serviceRollups.Select(r => r.Key.Service));
            Add(command, serviceRollups.Select(r => r.Key.Version));
            Add(command, serviceRollups.Select(r => r.Key.Outcome));
            Add(command, serviceRollups.Select(r => r.Key.Currency));
            AddSums(command, serviceRollups.Select(r => r.Value).ToList());
            batch.BatchCommands.Add(command);

            AddTotals(batch, ServiceTotalsSql, [], _services.OrderBy(t => t.Key.Service, StringComparer.Ordinal).ThenBy(t => t.Key.Currency, StringComparer.Ordinal)
                .Select(t => (new[] { t.Key.Service, t.Key.Currency }, t.Value)).ToList());
        }

        // The batch's key × service sums under its name, for a grain that never received its settlements (migration 0011).
        private void AddKeyBatch(NpgsqlBatch batch, Guid sender, long sequence, List<(string[] Key, TotalSums Sums)> rows)
        {
            if (rows.Count == 0)
            {
                return;
            }

            var command = batch.CreateBatchCommand();
            command.CommandText = KeyBatchesSql;
            command.Parameters.Add(new NpgsqlParameter { Value = sender, NpgsqlDbType = NpgsqlDbType.Uuid });
            command.Parameters.Add(new NpgsqlParameter { Value = sequence, NpgsqlDbType = NpgsqlDbType.Bigint });
            for (var column = 0; column < 3; column++)
            {
                Add(command, rows.Select(r => r.Key[column]));
            }

            Add(command, rows.Select(r => _keyAccounts[r.Key[0]]));
            Add(command, rows.Select(r => r.Sums.Calls));
            Add(command, rows.Select(r => r.Sums.ChargedCalls));
            Add(command, rows.Select(r => r.Sums.Failed));
            Add(command, rows.Select(r => r.Sums.Charged));
            batch.BatchCommands.Add(command);
        }

        private static void AddTotals(NpgsqlBatch batch, string sql, string[] windows, List<(string[] Key, TotalSums Sums)> rows)
        {
            if (rows.Count == 0)
            {
                return;
            }

            var command = batch.CreateBatchCommand();
            command.CommandText = sql;
            for (var column = 0; column < rows[0].Key.Length; column++)
            {
                Add(command, rows.Select(r => r.Key[column]));
            }

            Add(command, rows.Select(r => r.Sums.Calls));
            Add(command, rows.Select(r => r.Sums.ChargedCalls));
            Add(command, rows.Select(r => r.Sums.Failed));
            Add(command, rows.Select(r => r.Sums.Charged));
            foreach (var window in windows)
            {
                Add(command, rows.Select(r => r.Sums.Window(window).Start));
                Add(command, rows.Select(r => r.Sums.Window(window).Calls));
            }

            batch.BatchCommands.Add(command);
        }

        private static void AddSums(NpgsqlBatchCommand command, List<RollupSums> sums)
        {
            Add(command, sums.Select(s => s.Calls));
            Add(command, sums.Select(s => s.Charged));
            for (var b = 0; b < Buckets; b++)
            {
                var bucket = b;
                Add(command, sums.Select(s => s.Latency[bucket]));
            }
        }

        private static void Add(NpgsqlBatchCommand command, IEnumerable<string> values) =>
            command.Parameters.Add(new NpgsqlParameter { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Varchar });

        private static void Add(NpgsqlBatchCommand command, IEnumerable<DateTime> values) =>
            command.Parameters.Add(new NpgsqlParameter { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz });

        private static void Add(NpgsqlBatchCommand command, IEnumerable<DateOnly> values) =>
            command.Parameters.Add(new NpgsqlParameter { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Date });

        private static void Add(NpgsqlBatchCommand command, IEnumerable<long> values) =>
            command.Parameters.Add(new NpgsqlParameter { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });

        private static TotalSums Get<TKey>(Dictionary<TKey, TotalSums> sums, TKey key)
            where TKey : notnull => Get(sums, key, () => new TotalSums());

        private static TValue Get<TKey, TValue>(Dictionary<TKey, TValue> sums, TKey key, Func<TValue> create)
            where TKey : notnull
        {
            if (!sums.TryGetValue(key, out var value))
            {
                value = create();
                sums[key] = value;
            }

            return value;
        }
    }

    private sealed class RollupOrder : IComparer<RollupKey>
    {
        public static RollupOrder Instance { get; } = new();

        public int Compare(RollupKey x, RollupKey y)
        {
            var c = string.CompareOrdinal(x.Granularity, y.Granularity);
            c = c != 0 ? c : x.Start.CompareTo(y.Start);
            c = c != 0 ? c : string.CompareOrdinal(x.Account, y.Account);
            c = c != 0 ? c : string.CompareOrdinal(x.Key, y.Key);
            c = c != 0 ? c : string.CompareOrdinal(x.Service, y.Service);
            c = c != 0 ? c : string.CompareOrdinal(x.Version, y.Version);
            c = c != 0 ? c : string.CompareOrdinal(x.Outcome, y.Outcome);
            return c != 0 ? c : string.CompareOrdinal(x.Currency, y.Currency);
        }
    }

    private sealed class ServiceRollupOrder : IComparer<ServiceRollupKey>
    {
        public static ServiceRollupOrder Instance { get; } = new();

        public int Compare(ServiceRollupKey x, ServiceRollupKey y)
        {
            var c = string.CompareOrdinal(x.Granularity, y.Granularity);
            c = c != 0 ? c : x.Start.CompareTo(y.Start);
            c = c != 0 ? c : string.CompareOrdinal(x.Service, y.Service);
            c = c != 0 ? c : string.CompareOrdinal(x.Version, y.Version);
            c = c != 0 ? c : string.CompareOrdinal(x.Outcome, y.Outcome);
            return c != 0 ? c : string.CompareOrdinal(x.Currency, y.Currency);
        }
    }
}
