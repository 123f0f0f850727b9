using System.Text.RegularExpressions;

namespace Marketplace.Grains;

/// <summary>The TrackId that names one call everywhere: responses, upstream requests, logs and the call log.</summary>
public static partial class TrackIds
{
    /// <summary>The HTTP header that carries it, both ways.</summary>
    public const string Header = "X-Track-Id";

    /// <summary>The <see cref="RequestContext"/> key that carries it to grains.</summary>
    public const string ContextKey = "TrackId";

    /// <summary>True when a caller-supplied TrackId may be used as is: 8 to 64 characters of [A-Za-z0-9._-].</summary>
    public static bool IsWellFormed(string? value) => value is not null && TrackIdRegex().IsMatch(value);

    /// <summary>A new TrackId: time-ordered, 32 hex characters.</summary>
    public static string New() => TimeOrderedIds.New(DateTimeOffset.UtcNow).ToString("N");

    /// <summary>The caller's TrackId when well formed, otherwise a new one.</summary>
    public static string AcceptOrNew(string? value) => IsWellFormed(value) ? value! : New();

    [GeneratedRegex("^[A-Za-z0-9._-]{8,64}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex TrackIdRegex();
}
