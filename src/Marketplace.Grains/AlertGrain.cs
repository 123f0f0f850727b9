using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IAlertGrain"/>
/// <remarks>
/// <para>Keys and the account decide themselves when a counter or the balance crosses a threshold (they cache an
/// <see cref="AlertWatch"/>), so this grain hears only of crossings, never of every call. It is the one place that decides
/// what fires: each signal is checked against every alert and the set of what already fired, so a signal sent twice
/// (after a reactivation, a refreshed watch or a lost race) delivers nothing twice.</para>
/// <para>Deliveries run in a grain timer that interleaves with other calls, so a slow receiver never holds up signals or
/// the API. Retries are due by the <see cref="TimeProvider"/>: the first attempt at once, then after
/// <see cref="RetryDelays"/>; a delivery that exhausted them is dropped and recorded as the alert's last error. What fired
/// is stored before it is delivered, so a delivery is attempted at least once, and once stored, across restarts (the
/// timer resumes when the grain is next activated).</para>
/// </remarks>
public sealed partial class AlertGrain(
    [PersistentState("alerts", StorageNames.Marketplace)] IPersistentState<AlertsState> store,
    IOptions<GrainPersistenceOptions> persistence,
    IOptions<AlertOptions> options,
    UpstreamSecrets secrets,
    IHttpClientFactory httpClients,
    ILogger<AlertGrain> logger,
    TimeProvider time) : WriteBehindGrain<AlertsState>(store, persistence, logger), IAlertGrain
{
    /// <summary>Most alerts one account may register.</summary>
    public const int MaxAlerts = 10;

    /// <summary>Name of the <see cref="IHttpClientFactory"/> client deliveries use.</summary>
    public const string HttpClientName = "alerts";

    /// <summary>Waits before the 2nd, 3rd, ... attempt of a delivery; after the last one fails the delivery is given up.</summary>
    public static readonly IReadOnlyList<TimeSpan> RetryDelays =
        [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(10)];

    // Bounds on what one account can hold in storage and send at once.
    private const int MaxPending = 500;
    private const int MaxAttemptsPerTick = 16;

    private static readonly JsonSerializerOptions PayloadJson = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private IGrainTimer? _timer;
    private bool _delivering;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        Schedule();
        return base.OnActivateAsync(cancellationToken);
    }

    public async Task<AlertCreated> CreateAsync(AlertSpec spec)
    {
        Validation.ThrowIfInvalid(AlertValidation.Check(spec, options.Value.AllowPrivateNetworks));
        if (!secrets.Enabled)
        {
            throw new ArgumentException("Webhook alerts are not available: the marketplace has no Secrets:Key to keep signing secrets with.");
        }

        if (State.Alerts.Count >= MaxAlerts)
        {
            throw new InvalidOperationException($"The account already has {MaxAlerts} alerts; delete one first.");
        }

        var accountId = this.GetPrimaryKeyString();
        var account = await GrainFactory.GetGrain<IAccountGrain>(accountId).GetAsync()
            ?? throw new KeyNotFoundException($"Account '{accountId}' does not exist.");

        var now = time.GetUtcNow();
        var alertId = "al_" + ApiKeySecrets.NewTokenId();
        var secret = "whsec_" + ApiKeySecrets.NewSecret();
        var alert = new AlertState
        {
            Id = alertId,
            Url = spec.Url,
            Events = [.. spec.Events],
            Thresholds = [.. spec.Thresholds.Order()],
            Secret = secrets.Encrypt(SecretContext(alertId), secret),
            CreatedAt = now,
        };
        State.Alerts.Add(alert);

        // The first balance alert after top-ups nobody watched starts a cycle now (see AlertEvent.Balance).
        if (alert.Events.Contains(AlertEvent.Balance) && State.Cycle != account.TotalToppedUp)
        {
            StartCycle(account.TotalToppedUp, account.Balance + account.CreditLimit);
        }

        State.Version++;
        await SaveNowAsync();
        await PushWatchAsync(account.KeyIds);
        return new AlertCreated(ToInfo(alert), secret);
    }

    public Task<IReadOnlyList<AlertInfo>> ListAsync() => Task.FromResult<IReadOnlyList<AlertInfo>>([.. State.Alerts.Select(ToInfo)]);

    public async Task<bool> DeleteAsync(string alertId)
    {
        if (State.Alerts.RemoveAll(a => a.Id == alertId) == 0)
        {
            return false;
        }

        State.Pending.RemoveAll(d => d.AlertId == alertId);
        foreach (var fired in State.Fired.Keys.Where(k => k.StartsWith(alertId + "|", StringComparison.Ordinal)).ToList())
        {
            State.Fired.Remove(fired);
        }

        State.Version++;
        await SaveNowAsync();
        var account = await GrainFactory.GetGrain<IAccountGrain>(this.GetPrimaryKeyString()).GetAsync();
        await PushWatchAsync(account?.KeyIds ?? []);
        return true;
    }

    public Task<AlertWatch> GetWatchAsync() => Task.FromResult(Watch());

    public async Task NotifyQuotaAsync(QuotaSignal signal)
    {
        if (!Exists || signal.Limit <= 0)
        {
            return;
        }

        var fired = false;
        var forgetAfter = signal.WindowStart.AddDays(32);
        foreach (var alert in State.Alerts.Where(a => a.Events.Contains(AlertEvent.Quota)))
        {
            foreach (var threshold in alert.Thresholds.Where(t => Reached(signal.Used, signal.Limit, t)))
            {
                var key = string.Create(CultureInfo.InvariantCulture,
                    $"{alert.Id}|quota|{signal.KeyId}|{signal.Policy}|{signal.ServiceId}|{signal.WindowStart.UtcTicks}|{threshold}");
                if (State.Fired.TryAdd(key, forgetAfter))
                {
                    Enqueue(alert, AlertEvent.Quota, threshold, signal.KeyId, signal.Policy, signal.ServiceId, signal.WindowStart, signal.Used, signal.Limit);
                    fired = true;
                }
            }
        }

        if (fired)
        {
            await FiredAsync();
        }
    }

    public async Task NotifyBalanceAsync(BalanceSignal signal)
    {
        if (!Exists || (State.Cycle is { } cycle && signal.Cycle < cycle))
        {
            // No alerts were ever registered here, or the signal belongs to a cycle a later top-up ended.
            return;
        }

        var changed = false;
        if (State.Cycle != signal.Cycle)
        {
            StartCycle(signal.Cycle, signal.CycleBase);
            State.Version++;
            changed = true;
        }

        var fired = false;
        var cycleBase = State.CycleBase;
        var used = cycleBase - signal.Spendable;
        foreach (var alert in State.Alerts.Where(a => a.Events.Contains(AlertEvent.Balance)))
        {
            foreach (var threshold in alert.Thresholds.Where(t => Reached(used, cycleBase, t)))
            {
                var key = string.Create(CultureInfo.InvariantCulture, $"{alert.Id}|balance|{State.Cycle}|{threshold}");
                if (State.Fired.TryAdd(key, DateTimeOffset.MaxValue))
                {
                    Enqueue(alert, AlertEvent.Balance, threshold, null, null, null, null, used, cycleBase);
                    fired = true;
                }
            }
        }

        if (fired)
        {
            await FiredAsync();
        }
        else if (changed)
        {
            await SaveNowAsync();
        }
    }

    // True when used is at least threshold percent of limit (exact integer arithmetic, no overflow).
    private static bool Reached(long used, long limit, int threshold) => limit > 0 && (Int128)used * 100 >= (Int128)limit * threshold;

    private void StartCycle(long cycle, long cycleBase)
    {
        State.Cycle = cycle;
        State.CycleBase = cycleBase;
        foreach (var old in State.Fired.Keys.Where(k => k.Contains("|balance|", StringComparison.Ordinal)).ToList())
        {
            State.Fired.Remove(old);
        }
    }

    private void Enqueue(AlertState alert, AlertEvent alertEvent, int threshold, string? keyId, string? policy, string? serviceId,
        DateTimeOffset? windowStart, long used, long limit)
    {
        var now = time.GetUtcNow();
        var deliveryId = "dl_" + ApiKeySecrets.NewTokenId();
        var payload = new AlertPayload(deliveryId, alert.Id, EventName(alertEvent), threshold, this.GetPrimaryKeyString(), keyId, policy, serviceId,
            windowStart, used, limit, now);
        if (State.Pending.Count >= MaxPending)
        {
            var dropped = State.Pending[0];
            State.Pending.RemoveAt(0);
            RecordFailure(dropped, "Dropped: too many deliveries were waiting.", now);
        }

        State.Pending.Add(new AlertDeliveryState
        {
            Id = deliveryId,
            AlertId = alert.Id,
            Event = alertEvent,
            Body = JsonSerializer.Serialize(payload, PayloadJson),
            NextAttemptAt = now,
        });
    }

    // Stored before the first attempt, so a restart neither forgets a delivery nor fires it again.
    private async Task FiredAsync()
    {
        var now = time.GetUtcNow();
        foreach (var expired in State.Fired.Where(f => f.Value < now).Select(f => f.Key).ToList())
        {
            State.Fired.Remove(expired);
        }

        await SaveNowAsync();
        Schedule();
    }

    // Arms the timer for the earliest due delivery; looks at the clock at least every ClockCheckInterval meanwhile.
    private void Schedule()
    {
        if (_delivering)
        {
            // The running tick schedules the next one when it ends.
            return;
        }

        if (State.Pending.Count == 0)
        {
            _timer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            return;
        }

        var due = State.Pending.Min(d => d.NextAttemptAt) - time.GetUtcNow();
        var wait = due <= TimeSpan.Zero ? TimeSpan.Zero : (due < options.Value.ClockCheckInterval ? due : options.Value.ClockCheckInterval);
        if (_timer is null)
        {
            _timer = this.RegisterGrainTimer(DeliverDueAsync, new GrainTimerCreationOptions(wait, Timeout.InfiniteTimeSpan)
            {
                Interleave = true,
                KeepAlive = true,
            });
        }
        else
        {
            _timer.Change(wait, Timeout.InfiniteTimeSpan);
        }
    }

    private async Task DeliverDueAsync(CancellationToken cancellationToken)
    {
        _delivering = true;
        try
        {
            var now = time.GetUtcNow();
            var due = State.Pending.Where(d => d.NextAttemptAt <= now).OrderBy(d => d.NextAttemptAt).Take(MaxAttemptsPerTick).ToList();
            if (due.Count == 0)
            {
                return;
            }

            var errors = await Task.WhenAll(due.Select(AttemptAsync));
            now = time.GetUtcNow();
            for (var i = 0; i < due.Count; i++)
            {
                Settle(due[i], errors[i], now);
            }

            await SaveNowAsync();
        }
        catch (Exception exception)
        {
            // Storage failed: what changed stays in memory and is written within the write-behind interval.
            LogDeliveryStateNotSaved(logger, exception, this.GetPrimaryKeyString());
            MarkDirty();
        }
        finally
        {
            _delivering = false;
            Schedule();
        }
    }

    private void Settle(AlertDeliveryState delivery, string? error, DateTimeOffset now)
    {
        // The alert may have been deleted while the attempt was on its way.
        if (!State.Pending.Contains(delivery))
        {
            return;
        }

        delivery.Attempts++;
        var alert = State.Alerts.Find(a => a.Id == delivery.AlertId);
        if (error is null && alert is not null)
        {
            State.Pending.Remove(delivery);
            alert.Delivered++;
            alert.LastDeliveredAt = now;
        }
        else if (alert is null || delivery.Attempts > RetryDelays.Count)
        {
            State.Pending.Remove(delivery);
            RecordFailure(delivery, error ?? "The alert was deleted.", now);
        }
        else
        {
            delivery.LastError = error;
            delivery.NextAttemptAt = now + RetryDelays[delivery.Attempts - 1];
        }
    }

    private void RecordFailure(AlertDeliveryState delivery, string error, DateTimeOffset now)
    {
        if (State.Alerts.Find(a => a.Id == delivery.AlertId) is { } alert)
        {
            alert.LastError = string.Create(CultureInfo.InvariantCulture, $"Delivery {delivery.Id} gave up after {delivery.Attempts} attempts: {error}");
            alert.LastErrorAt = now;
            LogDeliveryFailed(logger, delivery.Id, alert.Id, delivery.Attempts, error);
        }
    }

    // One POST; null when the receiver answered 2xx, otherwise why not.
    private async Task<string?> AttemptAsync(AlertDeliveryState delivery)
    {
        var alert = State.Alerts.Find(a => a.Id == delivery.AlertId);
        if (alert is null)
        {
            return "The alert was deleted.";
        }

        var secret = secrets.Decrypt(SecretContext(alert.Id), alert.Secret);
        if (secret is null)
        {
            return "The signing secret cannot be decrypted with this marketplace's Secrets:Key.";
        }

        var timeout = options.Value.Timeout;
        using var request = new HttpRequestMessage(HttpMethod.Post, alert.Url)
        {
            Content = new StringContent(delivery.Body, Encoding.UTF8, "application/json"),
        };
        request.Headers.TryAddWithoutValidation(WebhookSignature.Header, WebhookSignature.Sign(secret, time.GetUtcNow().ToUnixTimeSeconds(), delivery.Body));
        request.Headers.TryAddWithoutValidation(WebhookSignature.EventHeader, EventName(delivery.Event));
        request.Headers.TryAddWithoutValidation(WebhookSignature.DeliveryHeader, delivery.Id);
        using var cancellation = new CancellationTokenSource(timeout, time);
        try
        {
            using var response = await httpClients.CreateClient(HttpClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellation.Token);
            return response.IsSuccessStatusCode
                ? null
                : string.Create(CultureInfo.InvariantCulture, $"The receiver answered {(int)response.StatusCode}.");
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            return string.Create(CultureInfo.InvariantCulture, $"No answer within {timeout.TotalSeconds:0.###} s.");
        }
        catch (Exception exception)
        {
            // Whatever went wrong, it counts as a failed attempt: a delivery never stays due without one.
            return "The request failed: " + exception.Message;
        }
    }

    private async Task PushWatchAsync(IEnumerable<string> keyIds)
    {
        // Awaited, so once registration returns, the account and its keys signal by the new watch. The watchers answer
        // without calling back, so this cannot deadlock; one that is unreachable refreshes on its own later.
        var watch = Watch();
        var watchers = keyIds.Select(k => GrainFactory.GetGrain<IApiKeyGrain>(k).AsReference<IAlertWatcher>())
            .Append(GrainFactory.GetGrain<IAccountGrain>(this.GetPrimaryKeyString()).AsReference<IAlertWatcher>());
        try
        {
            await Task.WhenAll(watchers.Select(w => w.WatchAlertsAsync(watch)));
        }
        catch (Exception exception)
        {
            LogWatchNotPushed(logger, exception, this.GetPrimaryKeyString());
        }
    }

    private AlertWatch Watch()
    {
        var quota = State.Alerts.Where(a => a.Events.Contains(AlertEvent.Quota)).SelectMany(a => a.Thresholds).Distinct().Order().ToList();
        var balance = State.Alerts.Where(a => a.Events.Contains(AlertEvent.Balance)).SelectMany(a => a.Thresholds).Distinct().Order().ToList();
        return new AlertWatch(State.Version, quota, balance, balance.Count > 0 ? State.Cycle : null, State.CycleBase);
    }

    private AlertInfo ToInfo(AlertState alert)
    {
        var pending = State.Pending.Where(d => d.AlertId == alert.Id).ToList();
        return new AlertInfo(
            alert.Id, this.GetPrimaryKeyString(), alert.Url, [.. alert.Events], [.. alert.Thresholds], alert.CreatedAt, alert.Delivered,
            pending.Count, alert.LastDeliveredAt, alert.LastError, alert.LastErrorAt, pending.Count == 0 ? null : pending.Min(d => d.NextAttemptAt));
    }

    private static string EventName(AlertEvent alertEvent) => alertEvent == AlertEvent.Quota ? "quota" : "balance";

    // Binds the ciphertext to this alert, so it cannot be moved to another one.
    private string SecretContext(string alertId) => $"alert:{this.GetPrimaryKeyString()}:{alertId}";

    /// <summary>The JSON body of a delivery.</summary>
    private sealed record AlertPayload(
        string DeliveryId, string AlertId, string Event, int Threshold, string AccountId, string? KeyId, string? Policy, string? ServiceId,
        DateTimeOffset? WindowStart, long Used, long Limit, DateTimeOffset At);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook delivery {DeliveryId} of alert {AlertId} gave up after {Attempts} attempts: {Error}")]
    private static partial void LogDeliveryFailed(ILogger logger, string deliveryId, string alertId, int attempts, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Alert state of account {AccountId} could not be written after deliveries; will retry")]
    private static partial void LogDeliveryStateNotSaved(ILogger logger, Exception exception, string accountId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Changed alerts of account {AccountId} could not be pushed to all its keys; they refresh on their own")]
    private static partial void LogWatchNotPushed(ILogger logger, Exception exception, string accountId);
}
