namespace Marketplace;

/// <summary>Kinds of entities the registry lists.</summary>
public enum EntityKind
{
    /// <summary>Data sellers.</summary>
    Provider = 0,

    /// <summary>Data services.</summary>
    Service = 1,

    /// <summary>Consumer accounts.</summary>
    Account = 2,
}

/// <summary>The list of every provider, service and account id, so admins can enumerate them.</summary>
[Alias("mk.IRegistryGrain")]
public interface IRegistryGrain : IGrainWithStringKey
{
    /// <summary>The key of the one registry grain.</summary>
    const string Default = "default";

    /// <summary>Adds an id to a list (idempotent).</summary>
    [Alias("AddAsync")]
    Task AddAsync(EntityKind kind, string id);

    /// <summary>All ids of a kind, sorted.</summary>
    [Alias("ListAsync")]
    Task<IReadOnlyList<string>> ListAsync(EntityKind kind);
}
