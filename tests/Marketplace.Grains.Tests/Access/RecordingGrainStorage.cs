using System.Collections.Concurrent;
using Orleans.Storage;

namespace Marketplace.Grains.Tests;

/// <summary>
/// Grain storage that counts the writes of each grain and refuses those of the grains a test names (a database that is away,
/// or a silo killed before it could write), passing everything else to the storage it wraps. Shared by every silo of the
/// process, so a test sees the writes of whichever silo holds the grain.
/// </summary>
public sealed class RecordingGrainStorage(IGrainStorage inner) : IGrainStorage
{
    private static readonly ConcurrentDictionary<GrainId, int> Writes = new();
    private static readonly ConcurrentDictionary<GrainId, bool> Refused = new();

    /// <summary>The writes of <paramref name="grain"/> stored so far.</summary>
    public static int WritesOf(GrainId grain) => Writes.GetValueOrDefault(grain);

    /// <summary>Refuses (true) or takes again (false) the writes of <paramref name="grain"/>.</summary>
    public static void Refuse(GrainId grain, bool refuse)
    {
        if (refuse)
        {
            Refused[grain] = true;
        }
        else
        {
            Refused.TryRemove(grain, out _);
        }
    }

    /// <inheritdoc />
    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        inner.ReadStateAsync(stateName, grainId, grainState);

    /// <inheritdoc />
    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        if (Refused.ContainsKey(grainId))
        {
            throw new InvalidOperationException($"Writes of {grainId} are refused by the test.");
        }

        await inner.WriteStateAsync(stateName, grainId, grainState);
        Writes.AddOrUpdate(grainId, 1, (_, count) => count + 1);
    }

    /// <inheritdoc />
    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState) =>
        inner.ClearStateAsync(stateName, grainId, grainState);
}
