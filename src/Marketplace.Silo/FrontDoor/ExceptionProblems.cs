using Microsoft.AspNetCore.Diagnostics;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Turns exceptions into problem+json. Rule violations raised by grains carry messages written for callers
/// (bad input, missing entity, conflicting state); anything else is a 500 whose details stay in the log.
/// </summary>
public sealed partial class ExceptionProblems(IProblemDetailsService problems, ILogger<ExceptionProblems> logger) : IExceptionHandler
{
    /// <inheritdoc />
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var (status, slug, title, detail) = exception switch
        {
            BadHttpRequestException bad => (bad.StatusCode, "bad-request", "The request could not be read.", bad.Message),
            ArgumentException => (StatusCodes.Status400BadRequest, "validation", "The request is invalid.", exception.Message),
            KeyNotFoundException => (StatusCodes.Status404NotFound, "not-found", "Not found.", exception.Message),
            InvalidOperationException => (StatusCodes.Status409Conflict, "conflict", "The request conflicts with the current state.", exception.Message),
            OperationCanceledException when httpContext.RequestAborted.IsCancellationRequested => (499, "client-closed", "The client closed the request.", (string?)null),
            TimeoutException => (StatusCodes.Status503ServiceUnavailable, "unavailable", "The marketplace is busy; try again.", (string?)null),

            // The silo holding a grain of this call stopped or died while the call was on its way (a restart, a crash):
            // the cluster moves the grain to a live silo within seconds, so the call can be repeated.
            SiloUnavailableException or OrleansMessageRejectionException => (StatusCodes.Status503ServiceUnavailable, "unavailable",
                "A marketplace node went away while handling the call; try again.", (string?)null),
            _ => (StatusCodes.Status500InternalServerError, "internal", "An unexpected error occurred.", "Quote the TrackId when you report it."),
        };

        if (status >= 500)
        {
            LogUnhandled(logger, exception, httpContext.Request.Method, httpContext.Request.Path);
        }

        httpContext.Response.StatusCode = status;
        if (status == StatusCodes.Status503ServiceUnavailable)
        {
            httpContext.Response.Headers.RetryAfter = "1";
        }

        // The exception handler cleared the response, the TrackId header with it.
        httpContext.Response.Headers[Grains.TrackIds.Header] = httpContext.GetTrackId();
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails = { Status = status, Type = Problems.TypeUri(slug), Title = title, Detail = detail },
        });
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Unhandled error on {Method} {Path}")]
    private static partial void LogUnhandled(ILogger logger, Exception exception, string method, PathString path);
}
