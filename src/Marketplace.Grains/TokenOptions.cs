using System.ComponentModel.DataAnnotations;

namespace Marketplace.Grains;

/// <summary>Lifetimes of access and refresh tokens (section <c>Tokens</c>).</summary>
public sealed class TokenOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Tokens";

    /// <summary>How long an access token works.</summary>
    [Range(typeof(TimeSpan), "00:00:05", "1.00:00:00", ErrorMessage = "Tokens:AccessTokenLifetime must be between 5 seconds and 1 day.")]
    public TimeSpan AccessTokenLifetime { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How long a refresh token can be exchanged.</summary>
    [Range(typeof(TimeSpan), "00:00:05", "90.00:00:00", ErrorMessage = "Tokens:RefreshTokenLifetime must be between 5 seconds and 90 days.")]
    public TimeSpan RefreshTokenLifetime { get; set; } = TimeSpan.FromDays(1);

    /// <summary>
    /// How long a used refresh token still answers with the pair it produced, so concurrent or retried
    /// refreshes of one token get the same pair instead of a second one.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00", ErrorMessage = "Tokens:RefreshGracePeriod must be at most 10 minutes.")]
    public TimeSpan RefreshGracePeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Most tokens one key may hold unexpired at once.</summary>
    [Range(1, 1_000_000, ErrorMessage = "Tokens:MaxTokensPerKey must be between 1 and 1000000.")]
    public int MaxTokensPerKey { get; set; } = 10_000;
}
