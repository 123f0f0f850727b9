namespace Marketplace;

/// <summary>
/// Names one delivery of settled calls: the process that sent it (a front door's or silo's settlement batcher, a new
/// id at every start) and its sequence number there. A sender has at most one delivery in flight per receiving grain
/// and numbers them in order, so a receiver that remembers the highest number it applied per sender recognises a
/// delivery sent again after its outcome was unknown, and applies it once.
/// </summary>
[GenerateSerializer, Immutable, Alias("mk.DeliveryId")]
public readonly record struct DeliveryId(
    [property: Id(0)] Guid Sender,
    [property: Id(1)] long Sequence);

/// <summary>
/// Settled calls of one key to one service that one activation of the key admitted, named by that activation's epoch
/// (<see cref="AdmitResult.Epoch"/>).
/// </summary>
[GenerateSerializer, Immutable, Alias("mk.EpochCalls")]
public readonly record struct EpochCalls(
    [property: Id(0)] long Epoch,
    [property: Id(1)] string ServiceId,
    [property: Id(2)] long Calls);
