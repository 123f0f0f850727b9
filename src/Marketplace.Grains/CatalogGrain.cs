namespace Marketplace.Grains;

/// <inheritdoc cref="ICatalogGrain"/>
/// <remarks>One grain holds every catalog line (a few hundred bytes each; 400+ services is well under a megabyte), so a
/// search is an in-memory filter with no database query. Service grains put their line after every change.</remarks>
public sealed class CatalogGrain(
    [PersistentState("catalog", StorageNames.Marketplace)] IPersistentState<CatalogState> store) : Grain, ICatalogGrain
{
    /// <summary>Largest page a search returns.</summary>
    public const int MaxPageSize = 100;

    public async Task PutAsync(CatalogEntry entry)
    {
        if (store.State.Entries.TryGetValue(entry.Id, out var existing) && existing == entry)
        {
            return;
        }

        store.State.Entries[entry.Id] = entry;
        await store.WriteStateAsync();
    }

    public Task<CatalogPage> SearchAsync(CatalogQuery query)
    {
        var page = Math.Max(1, query.Page);
        var size = Math.Clamp(query.PageSize, 1, MaxPageSize);
        var search = query.Search?.Trim();
        var matches = store.State.Entries.Values
            .Where(e => query.Statuses is not { Count: > 0 } statuses || statuses.Contains(e.Status))
            .Where(e => query.ProviderId is null || e.ProviderId == query.ProviderId)
            .Where(e => string.IsNullOrEmpty(query.Category) || string.Equals(e.Category, query.Category, StringComparison.OrdinalIgnoreCase))
            .Where(e => string.IsNullOrEmpty(search)
                || e.Name.Contains(search, StringComparison.OrdinalIgnoreCase)
                || e.Id.Contains(search, StringComparison.OrdinalIgnoreCase))
            .OrderBy(e => e.Name, StringComparer.OrdinalIgnoreCase)
            .ThenBy(e => e.Id, StringComparer.Ordinal)
            .ToList();
        var items = matches.Skip((page - 1) * size).Take(size).ToList();
        return Task.FromResult(new CatalogPage(items, page, size, matches.Count));
    }
}
