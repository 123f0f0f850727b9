namespace Marketplace.Silo.Apis;

// HTTP request bodies. Every field is nullable so a missing field becomes a clear validation error, not a binding failure.

/// <summary>Registers a provider.</summary>
public sealed record CreateProviderRequest(string? Id, string? Name, string? ContactEmail);

/// <summary>Publishes or changes a data service.</summary>
public sealed record UpsertServiceRequest(
    string? Id, string? Name, string? ProviderId, string? UpstreamBaseUrl, long? PricePerCall, string? Currency, string? Description, int? TimeoutMs,
    RateLimit? UpstreamRateLimit = null, string? Category = null, ChargeRule? ChargeRule = null, ServiceStatus? Status = null,
    IReadOnlyList<ServiceField>? Parameters = null, IReadOnlyList<ServiceField>? ResponseFields = null);

/// <summary>Opens a consumer account.</summary>
public sealed record CreateAccountRequest(string? Id, string? Name, string? Currency, long? CreditLimit, long? MonthlyCallCap = null);

/// <summary>Corrects a balance by a signed amount.</summary>
public sealed record AdjustmentRequest(long? Amount, string? Reason);

/// <summary>Adds money to an account.</summary>
public sealed record TopUpRequest(long? Amount, string? Reason);

/// <summary>Issues an API key.</summary>
public sealed record CreateKeyRequest(string? Name, IReadOnlyList<string>? Services, DateTimeOffset? ExpiresAt, KeyLimits? Limits = null);

/// <summary>Changes a key; omitted fields stay as they are.</summary>
public sealed record UpdateKeyRequest(string? Name, IReadOnlyList<string>? Services, DateTimeOffset? ExpiresAt, KeyLimits? Limits);

/// <summary>Issues a new secret; the current one keeps working for the overlap (default one day).</summary>
public sealed record RotateKeyRequest(long? OverlapSeconds);

/// <summary>The token endpoint's answer (RFC 6749 field names).</summary>
public sealed record TokenResponse(
    [property: System.Text.Json.Serialization.JsonPropertyName("access_token")] string AccessToken,
    [property: System.Text.Json.Serialization.JsonPropertyName("token_type")] string TokenType,
    [property: System.Text.Json.Serialization.JsonPropertyName("expires_in")] long ExpiresIn,
    [property: System.Text.Json.Serialization.JsonPropertyName("refresh_token")] string RefreshToken,
    [property: System.Text.Json.Serialization.JsonPropertyName("refresh_expires_in")] long RefreshExpiresIn);

/// <summary>What a consumer sees of its own usage.</summary>
public sealed record UsageResponse(AccountInfo Account, ApiKeyInfo Key);

/// <summary>Creates or changes a version of a data service (its adapter and protection).</summary>
public sealed record UpsertVersionRequest(
    string? BaseUrl, int? TimeoutMs, string? Method, string? PathTemplate, Dictionary<string, string>? ParameterMap,
    Dictionary<string, string>? Headers, Dictionary<string, string>? SecretHeaders, Dictionary<string, string>? ResponseFields,
    HitRule? Hit, ProtectionSpec? Protection);

/// <summary>Sets the gray release: weights per version (adding up to 100) and pins (key or account id → version).</summary>
public sealed record SetReleaseRequest(Dictionary<string, int>? Weights, Dictionary<string, string>? Pins);

/// <summary>Moves a data service to another status.</summary>
public sealed record SetStatusRequest(ServiceStatus? Status);

/// <summary>A provider key, shown once.</summary>
public sealed record ProviderKeyResponse(string ProviderId, string Key);
