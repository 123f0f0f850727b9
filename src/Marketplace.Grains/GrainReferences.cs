namespace Marketplace.Grains;

/// <summary>
/// References to grains of one interface with string keys, built without Orleans resolving the interface's grain type on
/// every call: <c>IGrainFactory.GetGrain&lt;T&gt;(key)</c> reads the interface's attributes each time (a trace of the
/// HTTP front door attributed 1.7% of its CPU to that alone). The first reference is made the usual way and tells the grain
/// type and interface type; later ones are built from them.
/// </summary>
public sealed class GrainReferences<T>(IGrainFactory grains)
    where T : IGrainWithStringKey
{
    private (GrainType Type, GrainInterfaceType Interface)? _resolved;

    /// <summary>The grain with this key, as <c>GetGrain&lt;T&gt;(key)</c> would return it.</summary>
    public T Get(string key)
    {
        if (_resolved is { } resolved)
        {
            return (T)grains.GetGrain(GrainId.Create(resolved.Type, key), resolved.Interface);
        }

        var first = grains.GetGrain<T>(key);
        var reference = (GrainReference)(object)first;
        _resolved = (reference.GrainId.Type, reference.InterfaceType);
        return first;
    }
}
