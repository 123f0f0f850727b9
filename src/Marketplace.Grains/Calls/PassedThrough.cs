namespace Marketplace.Grains;

/// <summary>What <see cref="ICallerConnection.PassThroughAsync"/> did.</summary>
/// <param name="Status">The upstream's status, or null when no answer came.</param>
/// <param name="Error">Why no answer came (or why the passed answer broke off), when known.</param>
public readonly record struct PassedThrough(int? Status, Exception? Error);
