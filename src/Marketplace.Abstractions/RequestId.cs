namespace Marketplace;

/// <summary>
/// Names one request about money from one sender (an API key's activation asking its account, a front door asking a key),
/// so that its receiver applies it once however often it arrives: a request whose outcome the sender does not know (the
/// answer was lost, the call timed out, the silo went away) is sent again with the same id until it is answered, and the
/// receiver answers a repeat with its first answer instead of applying it again.
/// </summary>
/// <param name="Sender">The sending activation or process; new at every start, so an id never names two requests.</param>
/// <param name="Sequence">The request's number at its sender, counting up from 1.</param>
/// <param name="Resolved">
/// The sender knows the outcome of every request it numbered below this (it was answered, or the sender gave up on it):
/// the receiver forgets their answers, and ignores a late copy of one. The bound on what a receiver remembers per sender.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.RequestId")]
public readonly record struct RequestId(
    [property: Id(0)] Guid Sender,
    [property: Id(1)] long Sequence,
    [property: Id(2)] long Resolved);
