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
        // The base URL is the optional shorthand for a one-version service (see DataServiceSpec).
        if (spec.UpstreamBaseUrl.Length > 0)
        {
            CheckBaseUrl(errors, "upstreamBaseUrl", spec.UpstreamBaseUrl);
            CheckTimeout(errors, "timeoutMs", spec.TimeoutMs);
        }

        if (spec.PricePerCall is < 0 or > 1_000_000_000)
        {
            errors["pricePerCall"] = ["pricePerCall must be between 0 and 1000000000 minor units."];
        }

        CheckCurrency(errors, spec.Currency);
        if (!Enum.IsDefined(spec.ChargeRule))
        {
            errors["chargeRule"] = ["chargeRule must be perSuccess, perCall or perHit."];
        }

        if (spec.Status is { } status && !Enum.IsDefined(status))
        {
            errors["status"] = ["status must be draft, published, suspended or retired."];
        }

        if (spec.Category is { } category && !CategoryRegex().IsMatch(category))
        {
            errors["category"] = ["category must be 1 to 64 letters, digits, spaces, '-' or '_'."];
        }

        CheckFields(errors, "parameters", spec.Parameters);
        CheckFields(errors, "responseFields", spec.ResponseFields);
        CheckRate(errors, "upstreamRateLimit", spec.UpstreamRateLimit);
        if (spec.Description is { Length: > 2000 })
        {
            errors["description"] = ["description must be at most 2000 characters."];
        }

        return errors;
    }

    /// <summary>Errors in a service version, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(string versionId, ServiceVersionSpec spec)
    {
        var errors = new Dictionary<string, string[]>();
        if (!IsVersionId(versionId))
        {
            errors["version"] = [$"version must match {VersionPattern}."];
        }

        CheckBaseUrl(errors, "baseUrl", spec.BaseUrl);
        CheckTimeout(errors, "timeoutMs", spec.TimeoutMs);
        if (spec.Method is { } method && !UpstreamMethods.Contains(method))
        {
            errors["method"] = ["method must be GET, POST, PUT, PATCH or DELETE (omit it to use the caller's)."];
        }

        if (spec.PathTemplate is { } template && !PathTemplate.TryParse(template, out _, out var templateError))
        {
            errors["pathTemplate"] = [templateError];
        }

        CheckNameMap(errors, "parameterMap", spec.ParameterMap, ParameterRegex(), "parameter names");
        CheckHeaders(errors, "headers", spec.Headers);
        CheckHeaders(errors, "secretHeaders", spec.SecretHeaders);
        if (spec.Headers is not null && spec.SecretHeaders is not null && spec.Headers.Keys.Intersect(spec.SecretHeaders.Keys, StringComparer.OrdinalIgnoreCase).Any())
        {
            errors["secretHeaders"] = ["A header is either in headers or in secretHeaders, not both."];
        }

        CheckNameMap(errors, "responseFields", spec.ResponseFields, FieldPathRegex(), "output names and dotted field paths");
        if (spec.Hit is { } hit && (hit.Field is null || !FieldPathRegex().IsMatch(hit.Field) || hit.EqualsValue is { Length: > 256 }))
        {
            errors["hit"] = ["hit.field must be a dotted field path such as data.found; hit.equalsValue at most 256 characters."];
        }

        if (spec.Protection is { } protection)
        {
            CheckProtection(errors, protection);
        }

        return errors;
    }

    /// <summary>Errors in a release against the service's versions, keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(ReleaseSpec release, IReadOnlyCollection<string> versions)
    {
        var errors = new Dictionary<string, string[]>();
        if (release.Weights is null || release.Weights.Count == 0)
        {
            errors["weights"] = ["weights must give at least one version a weight; they add up to 100."];
        }
        else
        {
            var unknown = release.Weights.Keys.Where(v => !versions.Contains(v)).ToList();
            if (unknown.Count > 0)
            {
                errors["weights"] = [$"Unknown versions: {string.Join(", ", unknown.Take(10))}."];
            }
            else if (release.Weights.Values.Any(w => w is < 0 or > 100))
            {
                errors["weights"] = ["Each weight must be between 0 and 100."];
            }
            else if (release.Weights.Values.Sum() != 100)
            {
                errors["weights"] = [$"The weights add up to {release.Weights.Values.Sum()}; they must add up to 100."];
            }
        }

        if (release.Pins is { } pins)
        {
            if (pins.Count > 10_000)
            {
                errors["pins"] = ["At most 10000 pins."];
            }
            else if (pins.Any(p => !Ids.IsValid(p.Key)))
            {
                errors["pins"] = [$"Pins are keyed by an API key id or an account id ({Ids.Pattern})."];
            }
            else if (pins.Values.Where(v => !versions.Contains(v)).Distinct().ToList() is { Count: > 0 } unknownPins)
            {
                errors["pins"] = [$"Pins name unknown versions: {string.Join(", ", unknownPins.Take(10))}."];
            }
        }

        return errors;
    }

    /// <summary>Pattern of version ids.</summary>
    public const string VersionPattern = "^[a-z0-9][a-z0-9._-]{0,31}$";

    /// <summary>True when <paramref name="versionId"/> is a well-formed version id.</summary>
    public static bool IsVersionId(string? versionId) => versionId is not null && VersionRegex().IsMatch(versionId);

    /// <summary>Methods an upstream may be called with.</summary>
    public static readonly IReadOnlySet<string> UpstreamMethods = new HashSet<string>(StringComparer.Ordinal) { "GET", "POST", "PUT", "PATCH", "DELETE" };

    // Headers the marketplace sets itself or that would break the request framing.
    private static readonly HashSet<string> ReservedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "TE", "Trailer",
        "Proxy-Connection", "Content-Type", TrackIds.Header,
    };

    private static void CheckBaseUrl(Dictionary<string, string[]> errors, string field, string? url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || !string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment) || !string.IsNullOrEmpty(uri.UserInfo)
            || url!.Length > 2048)
        {
            errors[field] = [$"{field} must be an absolute http or https URL without query, fragment or credentials."];
        }
    }

    private static void CheckTimeout(Dictionary<string, string[]> errors, string field, int timeoutMs)
    {
        if (timeoutMs is < 50 or > 120_000)
        {
            errors[field] = [$"{field} must be between 50 and 120000."];
        }
    }

    private static void CheckProtection(Dictionary<string, string[]> errors, ProtectionSpec protection)
    {
        if (protection.MaxConcurrency is < 1 or > 100_000)
        {
            errors["protection.maxConcurrency"] = ["protection.maxConcurrency must be between 1 and 100000."];
        }

        if (!(protection.FailureRatio > 0 && protection.FailureRatio <= 1))
        {
            errors["protection.failureRatio"] = ["protection.failureRatio must be in (0, 1]."];
        }

        if (protection.MinimumThroughput is < 2 or > 1_000_000)
        {
            errors["protection.minimumThroughput"] = ["protection.minimumThroughput must be between 2 and 1000000."];
        }

        if (protection.SamplingSeconds is < 1 or > 3600 || protection.BreakSeconds is < 1 or > 3600)
        {
            errors["protection.samplingSeconds"] = ["protection.samplingSeconds and protection.breakSeconds must be between 1 and 3600."];
        }

        if (protection.Retries is < 0 or > 5)
        {
            errors["protection.retries"] = ["protection.retries must be between 0 and 5."];
        }
        else if (protection.Retries > 0 && !protection.Idempotent)
        {
            errors["protection.retries"] = ["Retries are only allowed for an upstream marked idempotent (protection.idempotent)."];
        }
    }

    private static void CheckHeaders(Dictionary<string, string[]> errors, string field, IReadOnlyDictionary<string, string>? headers)
    {
        if (headers is null)
        {
            return;
        }

        if (headers.Count > 50)
        {
            errors[field] = [$"{field} may hold at most 50 headers."];
            return;
        }

        foreach (var (name, value) in headers)
        {
            if (!HeaderNameRegex().IsMatch(name) || ReservedHeaders.Contains(name))
            {
                errors[field] = [$"{field}: '{Truncate(name)}' is not a header name the marketplace forwards (reserved: {string.Join(", ", ReservedHeaders.Order())})."];
                return;
            }

            if (value is null || value.Length > 4096 || value.Any(char.IsControl))
            {
                errors[field] = [$"{field}: the value of {name} must be at most 4096 characters without control characters."];
                return;
            }
        }
    }

    private static void CheckNameMap(Dictionary<string, string[]> errors, string field, IReadOnlyDictionary<string, string>? map, Regex names, string what)
    {
        if (map is null)
        {
            return;
        }

        if (map.Count > 100 || map.Any(p => !names.IsMatch(p.Key) || p.Value is null || !names.IsMatch(p.Value)))
        {
            errors[field] = [$"{field} maps at most 100 {what} (letters, digits, '_', '-', '.')."];
        }
    }

    private static void CheckFields(Dictionary<string, string[]> errors, string field, IReadOnlyList<ServiceField>? fields)
    {
        if (fields is null)
        {
            return;
        }

        if (fields.Count > 100 || fields.Any(f => f is null || f.Name is null || !ParameterRegex().IsMatch(f.Name) || string.IsNullOrWhiteSpace(f.Type) || f.Type.Length > 32
            || f.Description is { Length: > 500 }))
        {
            errors[field] = [$"{field} documents at most 100 fields, each with a name, a type (at most 32 characters) and a description of at most 500."];
        }
    }

    private static string Truncate(string text) => text.Length > 40 ? text[..40] + "…" : text;

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
        if (amount is 0 or < -1_000_000_000_000 or > 1_000_000_000_000)
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

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,31}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex VersionRegex();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex CategoryRegex();

    [GeneratedRegex("^[A-Za-z0-9_.-]{1,64}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex ParameterRegex();

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}(\\.[A-Za-z0-9_-]{1,64}){0,9}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex FieldPathRegex();

    [GeneratedRegex("^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex HeaderNameRegex();

    [GeneratedRegex("^[A-Z]{3}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex CurrencyRegex();
}
