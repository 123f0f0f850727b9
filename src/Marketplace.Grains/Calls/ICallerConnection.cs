namespace Marketplace.Grains;

/// <summary>
/// The caller's own connection, when it can take a pass-through answer as the upstream sends it: the HTTP front door
/// forwards with YARP's forwarder and streams the answer. Internal .NET callers have none and get the answer read whole.
/// </summary>
public interface ICallerConnection
{
    /// <summary>
    /// Sends the call's upstream request; an answer the caller gets as it is (<see cref="PassThroughCall.PassesStatus"/>) is
    /// passed through with the call's own headers (<see cref="PassThroughCall.Answered"/>). Any other answer is not written,
    /// and no answer at all leaves the caller's response untouched, so the pipeline answers (or retries) instead.
    /// </summary>
    ValueTask<PassedThrough> PassThroughAsync(PassThroughCall call, CancellationToken cancellationToken);
}
