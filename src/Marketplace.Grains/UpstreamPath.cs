namespace Marketplace.Grains;

/// <summary>Builds the upstream URL of a call without letting the caller's path escape the service's base URL.</summary>
public static class UpstreamPath
{
    /// <summary>Joins base URL, the caller's sub-path (segments re-escaped) and query; false for dot segments or control characters.</summary>
    public static bool TryBuild(string baseUrl, string path, string query, out Uri uri)
    {
        uri = null!;
        if (path.Length > 2048 || query.Length > 8192 || (query.Length > 0 && query[0] != '?'))
        {
            return false;
        }

        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        foreach (var segment in segments)
        {
            if (segment is "." or ".." || segment.Contains('\\') || segment.Any(char.IsControl))
            {
                return false;
            }
        }

        if (query.Any(c => char.IsControl(c) || c == '#'))
        {
            return false;
        }

        var joined = segments.Length == 0 ? baseUrl : baseUrl + "/" + string.Join('/', segments.Select(Uri.EscapeDataString));
        return Uri.TryCreate(joined + query, UriKind.Absolute, out uri!);
    }
}
