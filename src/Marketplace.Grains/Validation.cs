using System.Text.RegularExpressions;

namespace Marketplace.Grains;

/// <summary>Checks on what admins send; the front door answers with these errors, grains refuse the same input.</summary>
public static partial class Validation
{
    /// <summary>Errors in a provider spec, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(string id, ProviderSpec spec)
    {
        var errors = new Dictionary<string, string[]>();
        CheckId(errors, "id", id);
        CheckName(errors, "name", spec.Name);
        if (spec.ContactEmail is { } email && (email.Length > 254 || !email.Contains('@')))
        {
            errors["contactEmail"] = ["contactEmail must be an e-mail address."];
        }

        return errors;
    }

    /// <summary>Errors in a data service spec, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(string id, DataServiceSpec spec)
    {
        var errors = new Dictionary<string, string[]>();
        CheckId(errors, "id", id);
        CheckName(errors, "name", spec.Name);
        CheckId(errors, "providerId", spec.ProviderId);
        if (!Uri.TryCreate(spec.UpstreamBaseUrl, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || !string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment) || !string.IsNullOrEmpty(uri.UserInfo))
        {
            errors["upstreamBaseUrl"] = ["upstreamBaseUrl must be an absolute http or https URL without query, fragment or credentials."];
        }

        if (spec.PricePerCall is < 0 or > 1_000_000_000)
        {
            errors["pricePerCall"] = ["pricePerCall must be between 0 and 1000000000 minor units."];
        }

        CheckCurrency(errors, spec.Currency);
        if (spec.TimeoutMs is < 50 or > 120_000)
        {
            errors["timeoutMs"] = ["timeoutMs must be between 50 and 120000."];
        }

        CheckRate(errors, "upstreamRateLimit", spec.UpstreamRateLimit);
        if (spec.Description is { Length: > 2000 })
        {
            errors["description"] = ["description must be at most 2000 characters."];
        }

        return errors;
    }

    /// <summary>Errors in an account spec, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(string id, AccountSpec spec)
    {
        var errors = new Dictionary<string, string[]>();
        CheckId(errors, "id", id);
        CheckName(errors, "name", spec.Name);
        CheckCurrency(errors, spec.Currency);
        if (spec.CreditLimit is < 0 or > 1_000_000_000_000)
        {
            errors["creditLimit"] = ["creditLimit must be between 0 and 1000000000000 minor units."];
        }

        if (spec.MonthlyCallCap is < 0)
        {
            errors["monthlyCallCap"] = ["monthlyCallCap must be zero or more (omit it for no cap)."];
        }

        return errors;
    }

    /// <summary>Errors in a top-up, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> CheckTopUp(long amount, string? reason)
    {
        var errors = new Dictionary<string, string[]>();
        if (amount is <= 0 or > 1_000_000_000_000)
        {
            errors["amount"] = ["amount must be a positive number of minor units, at most 1000000000000."];
        }

        if (string.IsNullOrWhiteSpace(reason) || reason.Length > 500)
        {
            errors["reason"] = ["reason is required (at most 500 characters)."];
        }

        return errors;
    }

    /// <summary>Errors in a balance adjustment, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> CheckAdjustment(long amount, string? reason)
    {
        var errors = new Dictionary<string, string[]>();
        if (amount == 0 || Math.Abs(amount) > 1_000_000_000_000)
        {
            errors["amount"] = ["amount must be a non-zero number of minor units (negative to debit), at most 1000000000000 either way."];
        }

        if (string.IsNullOrWhiteSpace(reason) || reason.Length > 500)
        {
            errors["reason"] = ["reason is required (at most 500 characters)."];
        }

        return errors;
    }

    /// <summary>Errors in an API key spec, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(ApiKeySpec spec, DateTimeOffset now)
    {
        var errors = new Dictionary<string, string[]>();
        CheckId(errors, "accountId", spec.AccountId);
        CheckName(errors, "name", spec.Name);
        if (spec.Services is null || spec.Services.Count == 0 || spec.Services.Count > 1000 || spec.Services.Any(s => !Ids.IsValid(s)))
        {
            errors["services"] = ["services must list between 1 and 1000 data service ids."];
        }

        if (spec.ExpiresAt is { } expiry && expiry <= now)
        {
            errors["expiresAt"] = ["expiresAt must be in the future."];
        }

        if (spec.Limits is { } limits)
        {
            CheckRate(errors, "limits.rate", limits.Rate);
            CheckQuota(errors, "limits.quota", limits.Quota);
            if (limits.WindowOffset is { } offset && (offset < TimeSpan.FromHours(-14) || offset > TimeSpan.FromHours(14) || offset.Ticks % TimeSpan.TicksPerMinute != 0))
            {
                errors["limits.windowOffset"] = ["limits.windowOffset must be whole minutes between -14:00 and +14:00."];
            }

            if (limits.PerService is { } perService)
            {
                if (perService.Count > 1000)
                {
                    errors["limits.perService"] = ["limits.perService may name at most 1000 services."];
                }

                foreach (var (serviceId, service) in perService)
                {
                    if (!Ids.IsValid(serviceId))
                    {
                        errors["limits.perService"] = [$"limits.perService keys must be data service ids ({Ids.Pattern})."];
                        continue;
                    }

                    if (service is null)
                    {
                        errors[$"limits.perService.{serviceId}"] = ["Each limits.perService entry needs a rate or a quota (omit the service for none)."];
                        continue;
                    }

                    CheckRate(errors, $"limits.perService.{serviceId}.rate", service?.Rate);
                    CheckQuota(errors, $"limits.perService.{serviceId}.quota", service?.Quota);
                }
            }
        }

        return errors;
    }

    private static void CheckRate(Dictionary<string, string[]> errors, string field, RateLimit? rate)
    {
        if (rate is not null && (!(rate.PerSecond > 0 && rate.PerSecond <= 1_000_000) || rate.Burst is < 1 or > 1_000_000))
        {
            errors[field] = [$"{field} needs perSecond in (0, 1000000] and burst in [1, 1000000]."];
        }
    }

    private static void CheckQuota(Dictionary<string, string[]> errors, string field, Quota? quota)
    {
        if (quota is not null && (quota.PerDay is < 0 || quota.PerMonth is < 0))
        {
            errors[field] = [$"{field} values must be zero or more (omit them for no quota)."];
        }
    }

    private static void CheckId(Dictionary<string, string[]> errors, string field, string? id)
    {
        if (!Ids.IsValid(id))
        {
            errors[field] = [$"{field} must match {Ids.Pattern}."];
        }
    }

    private static void CheckName(Dictionary<string, string[]> errors, string field, string? name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 200 || name.Any(char.IsControl))
        {
            errors[field] = [$"{field} is required, at most 200 characters, without control characters."];
        }
    }

    private static void CheckCurrency(Dictionary<string, string[]> errors, string? currency)
    {
        if (currency is null || !CurrencyRegex().IsMatch(currency))
        {
            errors["currency"] = ["currency must be an ISO 4217 code such as EUR or USD."];
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> with every message when <paramref name="errors"/> is not empty.</summary>
    public static void ThrowIfInvalid(Dictionary<string, string[]> errors)
    {
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", errors.Values.SelectMany(v => v)));
        }
    }

    [GeneratedRegex("^[A-Z]{3}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex CurrencyRegex();
}
