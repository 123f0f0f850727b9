using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Marketplace.Grains;

/// <summary>
/// A path template such as <c>/phone/{number}/verify</c>: literal text with placeholders that take the caller's query
/// parameter of the same name (escaped as one path segment).
/// </summary>
public sealed class PathTemplate
{
    private readonly List<(bool IsParameter, string Text)> _parts;

    private PathTemplate(List<(bool, string)> parts) => _parts = parts;

    /// <summary>Names of the placeholders, in order.</summary>
    public IEnumerable<string> Parameters => _parts.Where(p => p.IsParameter).Select(p => p.Text);

    /// <summary>Parses a template; false with a message a caller can act on.</summary>
    public static bool TryParse(string template, out PathTemplate parsed, out string error)
    {
        parsed = null!;
        error = string.Empty;
        if (template.Length is 0 or > 512 || template[0] != '/' || template.Any(c => char.IsControl(c) || c is '?' or '#' or '\\' or ' '))
        {
            error = "pathTemplate must start with '/', be at most 512 characters and hold no '?', '#', '\\', spaces or control characters.";
            return false;
        }

        if (template.Split('/').Any(segment => segment is "." or ".."))
        {
            error = "pathTemplate must not contain '.' or '..' segments.";
            return false;
        }

        var parts = new List<(bool, string)>();
        var position = 0;
        while (position < template.Length)
        {
            var open = template.IndexOf('{', position);
            var close = template.IndexOf('}', position);
            if (open < 0)
            {
                if (close >= 0)
                {
                    error = "pathTemplate has a '}' without its '{'.";
                    return false;
                }

                parts.Add((false, template[position..]));
                break;
            }

            var end = template.IndexOf('}', open);
            if ((close >= 0 && close < open) || end < 0)
            {
                error = "pathTemplate has unbalanced braces.";
                return false;
            }

            var name = template[(open + 1)..end];
            if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.') || name.Contains('{'))
            {
                error = "pathTemplate placeholders are {name} with 1 to 64 letters, digits, '_', '-' or '.'.";
                return false;
            }

            if (open > position)
            {
                parts.Add((false, template[position..open]));
            }

            parts.Add((true, name));
            position = end + 1;
        }

        parsed = new PathTemplate(parts);
        return true;
    }

    /// <summary>The path with every placeholder filled; false with the first missing parameter.</summary>
    public bool TryExpand(Func<string, string?> values, out string path, out string missing)
    {
        var builder = new StringBuilder();
        missing = string.Empty;
        foreach (var (isParameter, text) in _parts)
        {
            if (!isParameter)
            {
                builder.Append(text);
                continue;
            }

            if (values(text) is not { Length: > 0 } value)
            {
                path = string.Empty;
                missing = text;
                return false;
            }

            builder.Append(Uri.EscapeDataString(value));
        }

        path = builder.ToString();
        return true;
    }
}

/// <summary>What an upstream answered, read in full (bounded).</summary>
public sealed record UpstreamAnswer(int Status, string? ContentType, byte[] Body);

/// <summary>
/// A service version made ready for the call path: how the caller's request becomes the upstream request (method,
/// path template, parameter renames, added and secret headers, the TrackId) and how the answer comes back (pass
/// through or selected fields; whether it is a hit). Built once per version revision and shared by all calls.
/// </summary>
public sealed class UpstreamAdapter
{
    private static readonly MediaTypeHeaderValue JsonType = new("application/json") { CharSet = "utf-8" };

    private readonly PathTemplate? _template;
    private readonly List<(string Name, string Value)> _headers = [];
    private readonly string _baseUrl;

    /// <summary>Compiles a version; secret headers are decrypted with <paramref name="secrets"/>.</summary>
    public UpstreamAdapter(string serviceId, VersionRoute version, UpstreamSecrets secrets)
    {
        ServiceId = serviceId;
        Id = version.Id;
        Revision = version.Revision;
        Spec = version.Spec;
        Protection = version.Spec.Protection ?? ProtectionSpec.Default;
        _baseUrl = version.Spec.BaseUrl.TrimEnd('/');
        if (version.Spec.PathTemplate is { } template && PathTemplate.TryParse(template, out var parsed, out _))
        {
            _template = parsed;
        }

        foreach (var (name, value) in version.Spec.Headers ?? new Dictionary<string, string>())
        {
            _headers.Add((name, value));
        }

        foreach (var (name, stored) in version.Spec.SecretHeaders ?? new Dictionary<string, string>())
        {
            if (secrets.Decrypt(name, stored) is { } value)
            {
                _headers.Add((name, value));
            }
            else
            {
                SecretsUnavailable = true;
            }
        }
    }

    /// <summary>The service this version belongs to.</summary>
    public string ServiceId { get; }

    /// <summary>The version id.</summary>
    public string Id { get; }

    /// <summary>The version's revision; a change makes a new adapter.</summary>
    public int Revision { get; }

    /// <summary>The version as configured (secret values still encrypted).</summary>
    public ServiceVersionSpec Spec { get; }

    /// <summary>The version's protection settings.</summary>
    public ProtectionSpec Protection { get; }

    /// <summary>True when a secret header could not be decrypted here (missing or different Secrets:Key).</summary>
    public bool SecretsUnavailable { get; }

    /// <summary>This version's protection on this silo, once <see cref="UpstreamProtection"/> looked it up.</summary>
    internal VersionGuard? Guard { get; set; }

    /// <summary>Builds the upstream request; false with a message for the caller when the request cannot be mapped.</summary>
    public bool TryBuildRequest(CallRequest request, string trackId, out HttpRequestMessage message, out string error)
    {
        message = null!;
        if (!TryBuildUri(request, out var uri, out error))
        {
            return false;
        }

        message = new HttpRequestMessage { RequestUri = uri };
        Fill(message, request, trackId);
        return true;
    }

    /// <summary>The upstream address of the caller's request; false with a message for the caller when it cannot be mapped.</summary>
    public bool TryBuildUri(CallRequest request, out Uri uri, out string error)
    {
        uri = null!;
        error = string.Empty;
        // The common case, a pass-through version, forwards the caller's query as it came.
        var mapsQuery = _template is not null || Spec.ParameterMap is { Count: > 0 };
        var query = mapsQuery ? QueryParameters.Parse(request.Query) : null;
        if (mapsQuery && query is null)
        {
            error = "The query string is not allowed.";
            return false;
        }

        if (_template is null)
        {
            if (!UpstreamPath.TryBuild(_baseUrl, request.Path, query is null ? request.Query : Rename(query).ToQueryString(), out uri))
            {
                error = "The path after the service id is not allowed.";
                return false;
            }
        }
        else
        {
            if (request.Path.Trim('/').Length > 0)
            {
                error = "This data service takes no path after its id; send its parameters in the query string.";
                return false;
            }

            if (!_template.TryExpand(name => query!.Take(name), out var path, out var missing))
            {
                error = $"The parameter '{missing}' is required.";
                return false;
            }

            if (!Uri.TryCreate(_baseUrl + path + Rename(query!).ToQueryString(), UriKind.Absolute, out uri!))
            {
                error = "The parameters do not make a valid upstream address.";
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Fills an upstream request whose address <see cref="TryBuildUri"/> gave: the version's method, the TrackId, the
    /// version's headers (secret ones decrypted) and the caller's body (<see cref="BodyFor"/>). No header of the caller's
    /// is forwarded: its credential stays in the marketplace.
    /// </summary>
    public void Fill(HttpRequestMessage message, CallRequest request, string trackId)
    {
        FillHeaders(message, request, trackId);
        if (BodyFor(request) is { } body)
        {
            message.Content = new ByteArrayContent(body);
            DescribeBody(message.Content.Headers, request, body.Length);
        }
    }

    /// <summary>The version's method, the TrackId and the version's headers (secret ones decrypted); never the caller's headers.</summary>
    public void FillHeaders(HttpRequestMessage message, CallRequest request, string trackId)
    {
        message.Method = Spec.Method is { } method ? new HttpMethod(method) : HttpMethod.Parse(request.Method);
        message.Headers.TryAddWithoutValidation(TrackIds.Header, trackId);
        foreach (var (name, value) in _headers)
        {
            message.Headers.TryAddWithoutValidation(name, value);
        }
    }

    /// <summary>The body the upstream gets: the caller's, with fields renamed when the version maps parameters; null when there is none.</summary>
    public byte[]? BodyFor(CallRequest request) =>
        request.Body is { Length: > 0 } body ? (Spec.ParameterMap is { Count: > 0 } ? RenameJsonFields(body) : null) ?? body : null;

    /// <summary>The body's content headers: its length and the caller's content type.</summary>
    public static void DescribeBody(HttpContentHeaders headers, CallRequest request, long length)
    {
        headers.ContentLength = length;
        if (request.ContentType is not null && MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType))
        {
            headers.ContentType = mediaType;
        }
    }

    /// <summary>True when the caller gets the upstream's answer as it is (no fields selected, no hit rule to read it for).</summary>
    public bool PassesThrough => Spec.ResponseFields is not { Count: > 0 } && Spec.Hit is null;

    /// <summary>The answer the caller gets: passed through, or only the selected fields of a 2xx JSON answer.</summary>
    /// <exception cref="InvalidDataException">The version selects fields and the upstream's 2xx answer is not JSON.</exception>
    public UpstreamAnswer MapResponse(UpstreamAnswer answer)
    {
        if (Spec.ResponseFields is not { Count: > 0 } fields || answer.Status is < 200 or >= 300)
        {
            return answer;
        }

        JsonNode? root;
        try
        {
            root = JsonNode.Parse(answer.Body);
        }
        catch (JsonException)
        {
            throw new InvalidDataException("The upstream's answer is not the JSON this data service maps.");
        }

        var output = new JsonObject();
        foreach (var (name, path) in fields)
        {
            output[name] = Find(root, path)?.DeepClone();
        }

        return answer with { ContentType = JsonType.ToString(), Body = JsonSerializer.SerializeToUtf8Bytes(output) };
    }

    /// <summary>True when a 2xx answer carries data by the version's hit rule (any 2xx when it has none).</summary>
    public bool IsHit(UpstreamAnswer answer)
    {
        if (answer.Status is < 200 or >= 300)
        {
            return false;
        }

        if (Spec.Hit is not { } rule)
        {
            return true;
        }

        try
        {
            var value = Find(JsonNode.Parse(answer.Body), rule.Field);
            if (rule.EqualsValue is { } expected)
            {
                return value is not null && (value is JsonValue v && v.TryGetValue<string>(out var text) ? text : value.ToJsonString()) == expected;
            }

            return value switch
            {
                null => false,
                JsonArray array => array.Count > 0,
                JsonObject obj => obj.Count > 0,
                JsonValue v when v.TryGetValue<bool>(out var flag) => flag,
                JsonValue v when v.TryGetValue<string>(out var text) => text.Length > 0,
                JsonValue v when v.TryGetValue<double>(out var number) => number != 0,
                _ => true,
            };
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static JsonNode? Find(JsonNode? root, string path)
    {
        var node = root;
        foreach (var name in path.Split('.'))
        {
            node = node is JsonObject obj && obj.TryGetPropertyValue(name, out var child) ? child : null;
            if (node is null)
            {
                return null;
            }
        }

        return node;
    }

    private QueryParameters Rename(QueryParameters query) =>
        Spec.ParameterMap is { Count: > 0 } map ? query.Rename(map) : query;

    private byte[]? RenameJsonFields(byte[] body)
    {
        try
        {
            if (JsonNode.Parse(body) is not JsonObject obj)
            {
                return null;
            }

            var renamed = new JsonObject();
            foreach (var (name, value) in obj.ToList())
            {
                obj.Remove(name);
                renamed[Spec.ParameterMap!.TryGetValue(name, out var upstreamName) ? upstreamName : name] = value;
            }

            return JsonSerializer.SerializeToUtf8Bytes(renamed);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>The caller's query parameters, in order, with names and values decoded.</summary>
public sealed class QueryParameters
{
    private readonly List<KeyValuePair<string, string>> _items;

    private QueryParameters(List<KeyValuePair<string, string>> items) => _items = items;

    /// <summary>Parses <c>?a=1&amp;b=2</c>; null when it is too long or malformed.</summary>
    public static QueryParameters? Parse(string query)
    {
        if (query.Length > 8192 || (query.Length > 0 && query[0] != '?') || query.Any(c => char.IsControl(c) || c == '#'))
        {
            return null;
        }

        var items = new List<KeyValuePair<string, string>>();
        foreach (var pair in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = pair.IndexOf('=');
            var name = Decode(equals < 0 ? pair : pair[..equals]);
            var value = equals < 0 ? string.Empty : Decode(pair[(equals + 1)..]);
            if (name is null || value is null)
            {
                return null;
            }

            items.Add(new(name, value));
        }

        return new QueryParameters(items);
    }

    /// <summary>Removes and returns the first value of a parameter.</summary>
    public string? Take(string name)
    {
        var index = _items.FindIndex(p => p.Key == name);
        if (index < 0)
        {
            return null;
        }

        var value = _items[index].Value;
        _items.RemoveAt(index);
        return value;
    }

    /// <summary>The same parameters with names renamed by <paramref name="map"/> (caller's name → upstream's).</summary>
    public QueryParameters Rename(IReadOnlyDictionary<string, string> map) =>
        new([.. _items.Select(p => new KeyValuePair<string, string>(map.TryGetValue(p.Key, out var renamed) ? renamed : p.Key, p.Value))]);

    /// <summary><c>?a=1&amp;b=2</c> with names and values escaped, or empty.</summary>
    public string ToQueryString() => _items.Count == 0
        ? string.Empty
        : "?" + string.Join('&', _items.Select(p => Uri.EscapeDataString(p.Key) + "=" + Uri.EscapeDataString(p.Value)));

    private static string? Decode(string text)
    {
        try
        {
            return Uri.UnescapeDataString(text.Replace('+', ' '));
        }
        catch (UriFormatException)
        {
            return null;
        }
    }
}
