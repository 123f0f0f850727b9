namespace Marketplace.Silo.Apis;

// HTTP request bodies. Every field is nullable so a missing field becomes a clear validation error, not a binding failure.

/// <summary>Registers a provider.</summary>
public sealed record CreateProviderRequest(string? Id, string? Name, string? ContactEmail);

/// <summary>Publishes or changes a data service.</summary>
public sealed record UpsertServiceRequest(
    string? Id, string? Name, string? ProviderId, string? UpstreamBaseUrl, long? PricePerCall, string? Currency, string? Description, int? TimeoutMs);

/// <summary>Opens a consumer account.</summary>
public sealed record CreateAccountRequest(string? Id, string? Name, string? Currency, long? CreditLimit);

/// <summary>Adds money to an account.</summary>
public sealed record TopUpRequest(long? Amount, string? Reason);

/// <summary>Issues an API key.</summary>
public sealed record CreateKeyRequest(string? Name, IReadOnlyList<string>? Services, DateTimeOffset? ExpiresAt);

/// <summary>What a consumer sees of its own usage.</summary>
public sealed record UsageResponse(AccountInfo Account, ApiKeyInfo Key);
