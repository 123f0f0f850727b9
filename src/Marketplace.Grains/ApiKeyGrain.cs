using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IApiKeyGrain"/>
public sealed class ApiKeyGrain(
    [PersistentState("apikey", StorageNames.Marketplace)] IPersistentState<ApiKeyState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger<ApiKeyGrain> logger,
    TimeProvider time) : WriteBehindGrain<ApiKeyState>(store, options, logger), IApiKeyGrain
{
    public async Task<ApiKeyCreated> CreateAsync(ApiKeySpec spec, string? presetSecret = null)
    {
        var keyId = this.GetPrimaryKeyString();
        Validation.ThrowIfInvalid(Validation.Check(spec, time.GetUtcNow()));
        if (!ApiKeySecrets.IsValidKeyId(keyId))
        {
            throw new ArgumentException("Invalid key id.");
        }

        if (Exists)
        {
            throw new InvalidOperationException($"API key '{keyId}' already exists.");
        }

        if (presetSecret is not null && !ApiKeySecrets.IsValidSecret(presetSecret))
        {
            throw new ArgumentException("A preset secret must be 16 to 128 characters of [A-Za-z0-9_-].");
        }

        var account = GrainFactory.GetGrain<IAccountGrain>(spec.AccountId);
        var accountInfo = await account.GetAsync()
            ?? throw new KeyNotFoundException($"Account '{spec.AccountId}' does not exist.");

        var secret = presetSecret ?? ApiKeySecrets.NewSecret();
        State.AccountId = spec.AccountId;
        State.Currency = accountInfo.Currency;
        State.Name = spec.Name;
        State.Status = ApiKeyStatus.Active;
        State.Services = [.. spec.Services.Distinct(StringComparer.Ordinal)];
        State.ExpiresAt = spec.ExpiresAt;
        State.CreatedAt = time.GetUtcNow();
        State.Salt = ApiKeySecrets.NewSalt();
        State.SecretHash = ApiKeySecrets.Hash(State.Salt, secret);
        await SaveNowAsync();
        await account.AttachKeyAsync(keyId);
        return new ApiKeyCreated(ToInfo(), ApiKeySecrets.Format(keyId, secret));
    }

    public Task<ApiKeyInfo?> GetAsync() => Task.FromResult(Exists ? ToInfo() : null);

    public async Task<ApiKeyInfo?> SetStatusAsync(ApiKeyStatus status)
    {
        if (!Exists)
        {
            return null;
        }

        if (State.Status == ApiKeyStatus.Revoked && status != ApiKeyStatus.Revoked)
        {
            throw new InvalidOperationException("A revoked key cannot be reactivated.");
        }

        if (State.Status != status)
        {
            State.Status = status;
            await SaveNowAsync();
        }

        return ToInfo();
    }

    public async ValueTask<AdmitResult> AdmitAsync(AdmitRequest request)
    {
        var refusal = Check(request.Secret);
        if (refusal is { } outcome)
        {
            return Refuse(outcome);
        }

        if (!State.Services.Contains(request.ServiceId, StringComparer.Ordinal))
        {
            return Refuse(AdmitOutcome.NotEntitled);
        }

        if (request.Price == 0)
        {
            return new AdmitResult(AdmitOutcome.Admitted, State.AccountId, 0, 0, request.Currency);
        }

        if (!string.Equals(State.Currency, request.Currency, StringComparison.Ordinal))
        {
            return new AdmitResult(AdmitOutcome.CurrencyMismatch, State.AccountId, 0, 0, State.Currency);
        }

        var reservation = await GrainFactory.GetGrain<IAccountGrain>(State.AccountId).ReserveAsync(request.Price);
        return reservation.Granted
            ? new AdmitResult(AdmitOutcome.Admitted, State.AccountId, request.Price, reservation.Available, reservation.Currency)
            : new AdmitResult(AdmitOutcome.InsufficientBalance, State.AccountId, 0, reservation.Available, reservation.Currency);
    }

    public ValueTask<ApiKeyInfo?> AuthenticateAsync(string secret) =>
        ValueTask.FromResult(Check(secret) is null ? ToInfo() : null);

    public Task RecordAsync(string serviceId, bool succeeded, bool charged)
    {
        if (Exists)
        {
            State.Usage.Count(serviceId, succeeded, charged);
            MarkDirty();
        }

        return Task.CompletedTask;
    }

    private AdmitOutcome? Check(string secret)
    {
        if (!Exists || !ApiKeySecrets.Verify(State.Salt, State.SecretHash, secret))
        {
            return AdmitOutcome.InvalidCredentials;
        }

        return State.Status switch
        {
            ApiKeyStatus.Revoked => AdmitOutcome.Revoked,
            ApiKeyStatus.Suspended => AdmitOutcome.Suspended,
            _ when State.ExpiresAt is { } expiry && time.GetUtcNow() >= expiry => AdmitOutcome.Expired,
            _ => null,
        };
    }

    private static AdmitResult Refuse(AdmitOutcome outcome) => new(outcome, null, 0, 0, null);

    private ApiKeyInfo ToInfo() => new(
        this.GetPrimaryKeyString(), State.AccountId, State.Name, State.Status, [.. State.Services], State.ExpiresAt,
        State.CreatedAt, State.Usage.ToContract());
}
