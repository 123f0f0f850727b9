namespace Marketplace.Grains;

/// <summary>What a receiver makes of a request about money it was sent (see <see cref="RequestMemory{T}"/>).</summary>
public enum RequestSeen
{
    /// <summary>Not seen before: apply it and remember the answer.</summary>
    New = 0,

    /// <summary>Applied before: answer as the first time, change nothing.</summary>
    Repeat = 1,

    /// <summary>A late copy of a request whose outcome its sender already knows: change nothing; nobody reads the answer.</summary>
    Stale = 2,
}
