using Microsoft.Net.Http.Headers;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// JSON request bodies must be UTF-8 (RFC 8259): a JSON media type with any other charset is refused with a 415
/// problem before an endpoint tries to read it, instead of failing inside the framework's body binding.
/// </summary>
public static class JsonCharsetCheck
{
    /// <summary>Adds the check; put it after the TrackId middleware.</summary>
    public static IApplicationBuilder UseJsonCharsetCheck(this IApplicationBuilder app) => app.Use(next => context =>
    {
        // Most requests carry no body: they pass without an awaited step of their own.
        if (UnsupportedCharset(context.Request.ContentType) is not { } charset)
        {
            return next(context);
        }

        var problem = Problems.Create(StatusCodes.Status415UnsupportedMediaType, "unsupported-media-type",
            "JSON request bodies must be UTF-8.", $"The charset '{Problems.Truncate(charset)}' is not supported; send UTF-8.");
        return problem.ExecuteAsync(context);
    });

    // The charset of a JSON content type when it is not UTF-8; null otherwise (no charset, UTF-8, not JSON, unparsable).
    private static string? UnsupportedCharset(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType) || !MediaTypeHeaderValue.TryParse(contentType, out var mediaType))
        {
            return null;
        }

        var subtype = mediaType.SubTypeWithoutSuffix;
        var isJson = subtype.Equals("json", StringComparison.OrdinalIgnoreCase)
            || mediaType.Suffix.Equals("json", StringComparison.OrdinalIgnoreCase);
        if (!isJson || !mediaType.Charset.HasValue)
        {
            return null;
        }

        var charset = mediaType.Charset.Value!.Trim('"');
        return charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase) || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase)
            ? null
            : charset;
    }
}
