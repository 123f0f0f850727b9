using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>
/// What a signalling grain (a key or an account) knows of its account's alerts: a cached <see cref="AlertWatch"/>,
/// fetched on first use, replaced when the alert grain pushes a new one, and fetched again every
/// <see cref="RefreshAfter"/> in case a push was lost. Fetching never blocks the grain: it runs beside its calls.
/// </summary>
internal abstract partial class AlertWatchCache(IGrainFactory grains, string accountId, TimeProvider time, ILogger logger)
{
    /// <summary>How long a cached watch is trusted before it is fetched again.</summary>
    public static readonly TimeSpan RefreshAfter = TimeSpan.FromMinutes(5);

    private long _version = -1;
    private DateTimeOffset _fetchedAt = DateTimeOffset.MinValue;
    private bool _fetching;

    /// <summary>The alert grain of the account.</summary>
    protected IAlertGrain Alerts => grains.GetGrain<IAlertGrain>(accountId);

    /// <summary>Sends a one-way signal. Never throws: it runs inside admissions and settlements, after their state changed.</summary>
    protected void Send(Func<IAlertGrain, Task> signal)
    {
        try
        {
            _ = signal(Alerts);
        }
        catch (Exception exception)
        {
            LogSignalFailed(logger, exception, accountId);
        }
    }

    /// <summary>The clock.</summary>
    protected TimeProvider Time => time;

    /// <summary>Takes <paramref name="watch"/> unless a newer one is already held.</summary>
    public void Apply(AlertWatch watch)
    {
        if (watch.Version < _version)
        {
            return;
        }

        _version = watch.Version;
        _fetchedAt = time.GetUtcNow();
        OnWatch(watch);
    }

    /// <summary>Starts a fetch when the cached watch is missing or old; cheap enough for every call.</summary>
    protected void RefreshIfStale(DateTimeOffset now)
    {
        if (_fetching || now - _fetchedAt < RefreshAfter)
        {
            return;
        }

        _fetching = true;
        _fetchedAt = now;
        _ = FetchAsync();
    }

    /// <summary>Applies a new watch: keeps what the hot path needs, and signals what is already reached.</summary>
    protected abstract void OnWatch(AlertWatch watch);

    private async Task FetchAsync()
    {
        try
        {
            Apply(await Alerts.GetWatchAsync());
        }
        catch (Exception exception)
        {
            // Signals wait for the next fetch; nothing else depends on it.
            LogFetchFailed(logger, exception, accountId);
        }
        finally
        {
            _fetching = false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "An alert signal for account {AccountId} could not be sent")]
    private static partial void LogSignalFailed(ILogger logger, Exception exception, string accountId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Alerts of account {AccountId} could not be fetched; will try again")]
    private static partial void LogFetchFailed(ILogger logger, Exception exception, string accountId);
}

/// <summary>
/// A key's view of its account's quota alerts. After an admission counted a call in a quota, it compares the counter with
/// the cached thresholds (a few integer compares per quota, none without quota alerts) and tells the alert grain, one way,
/// only when the counter has just reached one.
/// </summary>
internal sealed class QuotaAlertWatch(IGrainFactory grains, string accountId, string keyId, Func<ApiKeyState> state, TimeProvider time, ILogger logger)
    : AlertWatchCache(grains, accountId, time, logger)
{
    private int[] _thresholds = [];

    /// <summary>Admitted calls were just counted: <paramref name="counter"/> went up by <paramref name="added"/>.</summary>
    public void Counted(string counterKey, string policy, long limit, QuotaCounterState counter, DateTimeOffset now, long added = 1)
    {
        RefreshIfStale(now);
        var thresholds = _thresholds;
        for (var i = 0; i < thresholds.Length; i++)
        {
            // A threshold is crossed when the count reaches it now and did not before these calls.
            if (Reached(counter.Count, limit, thresholds[i]) && !Reached(counter.Count - added, limit, thresholds[i]))
            {
                Signal(counterKey, policy, limit, counter, now);
                return;
            }
        }
    }

    protected override void OnWatch(AlertWatch watch)
    {
        _thresholds = [.. watch.QuotaThresholds];
        if (_thresholds.Length == 0)
        {
            return;
        }

        // What is already reached in the current windows (the alert grain fires each threshold once, whoever asks).
        var key = state();
        var limits = key.Limits;
        var now = Time.GetUtcNow();
        var offset = limits.WindowOffset ?? TimeSpan.Zero;
        Check(key, QuotaWindows.Day, QuotaWindows.Day, limits.PerDay, "day", now, offset);
        Check(key, QuotaWindows.Month, QuotaWindows.Month, limits.PerMonth, "month", now, offset);
        foreach (var (serviceId, service) in limits.PerService)
        {
            // The counter keys the key grain uses for per-service quotas.
            Check(key, $"{QuotaWindows.Day}:{serviceId}", QuotaWindows.Day, service.PerDay, "service-day", now, offset);
            Check(key, $"{QuotaWindows.Month}:{serviceId}", QuotaWindows.Month, service.PerMonth, "service-month", now, offset);
        }
    }

    private void Check(ApiKeyState key, string counterKey, string window, long? limit, string policy, DateTimeOffset now, TimeSpan offset)
    {
        var start = window == QuotaWindows.Day ? QuotaWindows.DayStart(now, offset) : QuotaWindows.MonthStart(now, offset);
        if (limit is { } l && key.Quotas.TryGetValue(counterKey, out var counter) && counter.WindowStart == start
            && _thresholds.Any(t => Reached(counter.Count, l, t)))
        {
            Signal(counterKey, policy, l, counter, now);
        }
    }

    private void Signal(string counterKey, string policy, long limit, QuotaCounterState counter, DateTimeOffset now)
    {
        var colon = counterKey.IndexOf(':', StringComparison.Ordinal);
        var serviceId = colon < 0 ? null : counterKey[(colon + 1)..];
        var signal = new QuotaSignal(keyId, policy, serviceId, counter.WindowStart, counter.Count, limit, now);
        Send(alerts => alerts.NotifyQuotaAsync(signal));
    }

    private static bool Reached(long used, long limit, int threshold) => limit > 0 && (Int128)used * 100 >= (Int128)limit * threshold;
}

/// <summary>
/// An account's view of its balance alerts (see <see cref="AlertEvent.Balance"/>): the current cycle and, per threshold,
/// the spendable amount at or below which it is reached. After a settlement or adjustment it compares the spendable
/// amount before and after with those levels and tells the alert grain, one way, only when one was crossed; a top-up
/// starts a new cycle and says so.
/// </summary>
internal sealed class BalanceAlertWatch(IGrainFactory grains, string accountId, Func<AccountState> state, TimeProvider time, ILogger logger)
    : AlertWatchCache(grains, accountId, time, logger)
{
    private IReadOnlyList<int> _thresholds = [];
    private long[] _levels = [];
    private long? _cycle;
    private long _base;

    /// <summary>A settlement or adjustment changed the balance; <paramref name="before"/> is balance plus credit limit before it.</summary>
    public void Changed(long before, DateTimeOffset now)
    {
        RefreshIfStale(now);
        var levels = _levels;
        if (levels.Length == 0)
        {
            return;
        }

        var after = Spendable(state());
        for (var i = 0; i < levels.Length; i++)
        {
            if (before > levels[i] && after <= levels[i])
            {
                Signal(after, now);
                return;
            }
        }
    }

    /// <summary>A top-up was booked: a new cycle starts from what the account can spend now.</summary>
    public void ToppedUp(DateTimeOffset now)
    {
        RefreshIfStale(now);
        if (_thresholds.Count == 0)
        {
            return;
        }

        var account = state();
        StartCycle(account.TotalToppedUp, Spendable(account));
        Signal(Spendable(account), now);
    }

    protected override void OnWatch(AlertWatch watch)
    {
        _thresholds = watch.BalanceThresholds;
        if (_thresholds.Count == 0)
        {
            _levels = [];
            return;
        }

        var account = state();
        var spendable = Spendable(account);
        var signal = false;
        if (watch.Cycle == account.TotalToppedUp)
        {
            StartCycle(account.TotalToppedUp, watch.CycleBase);
        }
        else if (_cycle == account.TotalToppedUp)
        {
            // This activation booked a top-up the alert grain has not heard of yet; its signal is on the way.
            StartCycle(_cycle.Value, _base);
        }
        else
        {
            // A top-up whose signal was lost (or came before this watch): the cycle starts from what is spendable now.
            StartCycle(account.TotalToppedUp, spendable);
            signal = true;
        }

        if (signal || _levels.Any(level => spendable <= level))
        {
            Signal(spendable, Time.GetUtcNow());
        }
    }

    private void StartCycle(long cycle, long cycleBase)
    {
        _cycle = cycle;
        _base = cycleBase;

        // used % >= t  <=>  spendable * 100 <= base * (100 - t)  <=>  spendable <= floor(base * (100 - t) / 100).
        _levels = cycleBase <= 0 ? [] : [.. _thresholds.Select(t => (long)((Int128)cycleBase * (100 - t) / 100))];
    }

    private void Signal(long spendable, DateTimeOffset now)
    {
        var signal = new BalanceSignal(_cycle ?? 0, _base, spendable, now);
        Send(alerts => alerts.NotifyBalanceAsync(signal));
    }

    private static long Spendable(AccountState account) => account.Balance + account.CreditLimit;
}
