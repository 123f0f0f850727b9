namespace Marketplace.Grains;

/// <summary>
/// The totals of <see cref="MemoryJournal"/>: what the database journal's totals tables hold (migrations 0007 and 0009),
/// committed per batch exactly once per sender and number, and read as one snapshot.
/// </summary>
internal sealed class MemoryJournalTotals
{
    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, long> _senders = [];
    private readonly Dictionary<string, AccountTotals> _accounts = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<string, KeyTotals>> _keys = new(StringComparer.Ordinal);
    private readonly Dictionary<string, JournalCounts> _services = new(StringComparer.Ordinal);
    private readonly List<JournalBatchUsage> _batches = [];
    private const int BatchesKept = 100_000;

    /// <summary>Adds the settled calls of batch <paramref name="sequence"/> of <paramref name="sender"/>, unless it was added before.</summary>
    public void Commit(Guid sender, long sequence, IReadOnlyList<CallRecord> records)
    {
        lock (_gate)
        {
            if (_senders.TryGetValue(sender, out var last) && last >= sequence)
            {
                return;
            }

            _senders[sender] = sequence;
            var batch = new Dictionary<(string Key, string Service), (string Account, long[] Sums)>();
            foreach (var record in records)
            {
                if (record.Settled)
                {
                    Add(record);
                    if (record.KeyId is { } keyId)
                    {
                        if (!batch.TryGetValue((keyId, record.ServiceId), out var sums))
                        {
                            sums = (record.AccountId!, new long[4]);
                            batch[(keyId, record.ServiceId)] = sums;
                        }

                        sums.Sums[0]++;
                        sums.Sums[1] += record.Charged > 0 ? 1 : 0;
                        sums.Sums[2] += record.Outcome == CallOutcome.Succeeded ? 0 : 1;
                        sums.Sums[3] += record.Charged;
                    }
                }
            }

            foreach (var ((keyId, serviceId), (accountId, sums)) in batch)
            {
                _batches.Add(new JournalBatchUsage(sender, sequence, keyId, accountId, new ServiceUsageDelta(serviceId, sums[0], sums[1], sums[2], sums[3])));
            }

            // The database keeps an hour of them; in memory, the newest ones are enough for tests and benchmarks.
            if (_batches.Count > BatchesKept)
            {
                _batches.RemoveRange(0, _batches.Count - BatchesKept);
            }
        }
    }

    public AccountJournal ReadAccount(string accountId, IReadOnlyCollection<string> keyIds, DateTimeOffset now)
    {
        lock (_gate)
        {
            var byService = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var keyId in keyIds)
            {
                foreach (var (serviceId, totals) in _keys.GetValueOrDefault(keyId) ?? [])
                {
                    byService[serviceId] = byService.GetValueOrDefault(serviceId) + totals.Counts.Calls;
                }
            }

            var account = _accounts.GetValueOrDefault(accountId);
            var month = account is not null && account.Month == JournalWindows.UtcMonth(now) ? account.MonthCalls : 0;
            return new AccountJournal(account?.Counts ?? JournalCounts.Zero, month, byService, Senders());
        }
    }

    public KeyJournal ReadKey(string keyId)
    {
        lock (_gate)
        {
            var services = (_keys.GetValueOrDefault(keyId) ?? [])
                .Select(s => new KeyServiceJournal(s.Key, s.Value.Counts, s.Value.Day, s.Value.DayCalls, s.Value.Month, s.Value.MonthCalls))
                .ToList();
            return new KeyJournal(services, Senders());
        }
    }

    public ServiceJournal ReadService(string serviceId)
    {
        lock (_gate)
        {
            return new ServiceJournal(_services.GetValueOrDefault(serviceId) ?? JournalCounts.Zero, Senders());
        }
    }

    public IReadOnlyList<JournalBatchUsage> ReadBatches(Guid sender, long after, string? keyId, string? accountId)
    {
        lock (_gate)
        {
            return [.. _batches.Where(b => b.Sender == sender && b.Sequence > after && (keyId is null || b.KeyId == keyId)
                && (accountId is null || b.AccountId == accountId))];
        }
    }

    private Dictionary<Guid, long> Senders() => new(_senders);

    private void Add(CallRecord record)
    {
        var counts = new JournalCounts(1, record.Charged > 0 ? 1 : 0, record.Outcome == CallOutcome.Succeeded ? 0 : 1, record.Charged);
        if (!_accounts.TryGetValue(record.AccountId!, out var account))
        {
            account = new AccountTotals();
            _accounts[record.AccountId!] = account;
        }

        account.Counts = account.Counts.Add(counts);
        (account.Month, account.MonthCalls) = Window(account.Month, account.MonthCalls, JournalWindows.UtcMonth(record.At));

        if (record.KeyId is { } keyId)
        {
            if (!_keys.TryGetValue(keyId, out var services))
            {
                services = new Dictionary<string, KeyTotals>(StringComparer.Ordinal);
                _keys[keyId] = services;
            }

            if (!services.TryGetValue(record.ServiceId, out var key))
            {
                key = new KeyTotals();
                services[record.ServiceId] = key;
            }

            key.Counts = key.Counts.Add(counts);
            (key.Day, key.DayCalls) = Window(key.Day, key.DayCalls, JournalWindows.Day(record.At, record.WindowOffsetMinutes));
            (key.Month, key.MonthCalls) = Window(key.Month, key.MonthCalls, JournalWindows.Month(record.At, record.WindowOffsetMinutes));
        }

        _services[record.ServiceId] = (_services.GetValueOrDefault(record.ServiceId) ?? JournalCounts.Zero).Add(counts);
    }

    // A call in a newer window starts it; one in the same window adds to it; one in an older window (over) is not counted.
    private static (DateOnly Window, long Calls) Window(DateOnly stored, long calls, DateOnly window) =>
        window > stored ? (window, 1) : window == stored ? (stored, calls + 1) : (stored, calls);

    private sealed class AccountTotals
    {
        public JournalCounts Counts { get; set; } = JournalCounts.Zero;

        public DateOnly Month { get; set; }

        public long MonthCalls { get; set; }
    }

    private sealed class KeyTotals
    {
        public JournalCounts Counts { get; set; } = JournalCounts.Zero;

        public DateOnly Day { get; set; }

        public long DayCalls { get; set; }

        public DateOnly Month { get; set; }

        public long MonthCalls { get; set; }
    }
}
