namespace Marketplace;

/// <summary>Names of the Orleans storage providers the grains persist to.</summary>
public static class StorageNames
{
    /// <summary>The grain storage that holds every marketplace grain's state.</summary>
    public const string Marketplace = "marketplace";
}
