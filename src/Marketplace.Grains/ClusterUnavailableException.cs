namespace Marketplace.Grains;

/// <summary>
/// A grain call on the call path could not be completed: its silo did not answer within the hot-path timeout, the
/// connection to it dropped, or it went away. The call is answered 503 <c>cluster-unavailable</c> with Retry-After.
/// </summary>
public sealed class ClusterUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
