namespace Marketplace.Grains;

/// <summary>An unexpected error after admission, whose reservation was already released; answered 500.</summary>
internal sealed class UnexpectedCallException(Exception inner) : Exception("The call failed unexpectedly after admission.", inner);
