using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>
/// Wraps admission, forwarding and charging once for a call with an Idempotency-Key: the call runs once per API key and
/// request. A retry is answered from the first call's result before admission, so it uses no quota and needs no balance;
/// a call that charged nothing and did not succeed (or threw) releases the key so a retry runs again. The credential is
/// verified first, so nobody without the API key's secret (or token) can claim or read its keys.
/// </summary>
internal sealed class IdempotencyStage(IGrainFactory grains, GrainReferences<IApiKeyGrain> keys, HotPathCalls hotPath, TimeSpan window, ILogger logger)
{
    /// <summary>Runs <paramref name="stages"/> at most once for the request's Idempotency-Key.</summary>
    public async Task<CallResult> RunOnceAsync(CallRequest request, CallTrace trace, Func<Task<CallResult>> stages)
    {
        var key = keys.Get(trace.KeyId!);
        var (proof, kind) = (trace.Proof, trace.Kind);
        if (!await hotPath.CallAsync(() => key.VerifyAsync(proof, kind), HotPathRetry.WhenSafe, "API key"))
        {
            // Not the key's credential: admission refuses it, and no key of the API key is claimed or read.
            return await stages();
        }

        var fingerprint = Fingerprint(request);
        var claim = grains.GetGrain<IIdempotencyGrain>(trace.KeyId + "/" + request.IdempotencyKey);
        var claimFor = trace.Compiled!.LongestCall;

        // Not repeated after a fault that may have stored the claim: the repeat would find its own claim "in progress".
        // The claim lasts as long as the call may run, so a slow call's retry is not run a second time.
        var start = await hotPath.CallAsync(() => new ValueTask<IdempotencyStart>(claim.BeginAsync(fingerprint, window, claimFor)),
            HotPathRetry.WhenNotRun, "Idempotency-Key");
        if (start.Status != IdempotencyStatus.Started)
        {
            return Replay(trace, start);
        }

        CallResult result;
        try
        {
            result = await stages();
        }
        catch
        {
            // A cluster fault, the caller gone, something unexpected: nothing was charged, so a retry may run the call.
            await AbandonAsync(claim, fingerprint);
            throw;
        }

        await RememberAsync(claim, fingerprint, result);
        return result;
    }

    // Releases an Idempotency-Key after a call that charged nothing. A release that fails leaves the claim to lapse.
    private async Task AbandonAsync(IIdempotencyGrain claim, string fingerprint)
    {
        try
        {
            await hotPath.CallAsync(() => claim.AbandonAsync(fingerprint), HotPathRetry.WhenSafe, "Idempotency-Key");
        }
        catch (ClusterUnavailableException exception)
        {
            CallPipelineLog.IdempotencyNotStored(logger, exception.Message);
        }
    }

    // A charged or successful result is kept for retries; a failure that charged nothing releases the key so a retry runs
    // again. The caller was answered by the upstream (and maybe charged) whatever happens here, so a cluster fault in
    // storing the result does not turn the answer into a failure.
    private async Task RememberAsync(IIdempotencyGrain claim, string fingerprint, CallResult result)
    {
        if (result.Charged == 0 && result.Outcome != CallOutcome.Succeeded)
        {
            await AbandonAsync(claim, fingerprint);
            return;
        }

        var kept = result.Body is { Length: > IdempotencyOptions.MaxStoredBodyBytes }
            ? result with
            {
                Outcome = CallOutcome.IdempotencyConflict, Body = null, ContentType = null,
                Detail = "The first call with this Idempotency-Key was answered and charged once; its answer was too large to keep for replays.",
            }
            : result;
        try
        {
            await hotPath.CallAsync(() => claim.CompleteAsync(fingerprint, kept), HotPathRetry.WhenSafe, "Idempotency-Key");
        }
        catch (Exception exception)
        {
            // Whatever failed here, the call was answered and settled: its answer and its row stay what they are.
            CallPipelineLog.IdempotencyNotStored(logger, exception.Message);
        }
    }

    private static CallResult Replay(CallTrace trace, IdempotencyStart start) => start.Status switch
    {
        IdempotencyStatus.Completed => start.Result! with { TrackId = trace.TrackId, Charged = 0, Replayed = true },
        IdempotencyStatus.Mismatch => trace.Refused(CallOutcome.IdempotencyConflict) with
        {
            Version = trace.Adapter?.Id, Detail = "This Idempotency-Key was used for a different request; use a new key for a new request.",
        },
        _ => trace.Refused(CallOutcome.IdempotencyConflict) with
        {
            Version = trace.Adapter?.Id, Detail = "A call with this Idempotency-Key is still running; retry after the Retry-After seconds.", RetryAfterSeconds = 1,
        },
    };

    // What makes two requests "the same" for an Idempotency-Key: service, method, path, query and body.
    private static string Fingerprint(CallRequest request)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"{request.ServiceId}\n{request.Method}\n{request.Path}\n{request.Query}\n"));
        hash.AppendData(request.Body ?? []);
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}
