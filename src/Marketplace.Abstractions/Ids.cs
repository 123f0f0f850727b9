using System.Text.RegularExpressions;

namespace Marketplace;

/// <summary>Rules for the identifiers admins choose for providers, services and accounts.</summary>
public static partial class Ids
{
    /// <summary>Lower-case letters, digits and dashes, 2 to 63 characters, starting with a letter or digit.</summary>
    public const string Pattern = "^[a-z0-9][a-z0-9-]{1,62}$";

    /// <summary>True when <paramref name="id"/> is a well-formed identifier.</summary>
    public static bool IsValid(string? id) => id is not null && IdRegex().IsMatch(id);

    // \z, not $: $ also matches before a trailing newline.
    [GeneratedRegex("^[a-z0-9][a-z0-9-]{1,62}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex IdRegex();
}
