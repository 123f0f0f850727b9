using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// The problem types the marketplace answers with. Each type is a stable URN documented in the README;
/// every problem also carries the call's <c>trackId</c> (added by the problem details service).
/// </summary>
public static class Problems
{
    /// <summary>Builds a problem+json result.</summary>
    public static ProblemHttpResult Create(int status, string slug, string title, string? detail = null, IDictionary<string, object?>? extensions = null) =>
        TypedResults.Problem(detail: detail, statusCode: status, title: title, type: TypeUri(slug), extensions: extensions);

    /// <summary>The type URI of a problem slug.</summary>
    public static string TypeUri(string slug) => $"urn:marketplace:problem:{slug}";

    /// <summary>400 with field errors.</summary>
    public static ValidationProblem Validation(IDictionary<string, string[]> errors) =>
        TypedResults.ValidationProblem(errors, title: "The request is invalid.", type: TypeUri("validation"));

    /// <summary>404 for an entity that does not exist.</summary>
    public static ProblemHttpResult NotFound(string kind, string id) =>
        Create(StatusCodes.Status404NotFound, "not-found", $"No such {kind}.", $"{kind} '{Truncate(id)}' does not exist.");

    /// <summary>401 for a consumer credential, with the Bearer challenge.</summary>
    public static ProblemHttpResult Unauthorized(HttpContext context, string detail, string slug = "invalid-api-key", string title = "A valid API key is required.")
    {
        context.Response.Headers.WWWAuthenticate = "Bearer realm=\"marketplace\"";
        return Create(StatusCodes.Status401Unauthorized, slug, title, detail);
    }

    /// <summary>Cuts caller-supplied text before echoing it.</summary>
    public static string Truncate(string value) => value.Length <= 64 ? value : value[..64] + "…";
}
