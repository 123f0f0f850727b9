namespace Marketplace.Grains.Tests;

/// <summary>
/// How much of the money messages <see cref="PacketLossFilter"/> loses, and how many it lost. Static because the silos'
/// filters are created by the test cluster; only silos that register the filter read it.
/// </summary>
public static class PacketLoss
{
    // The messages that move money or quota between grains and front doors: lease grants and returns, key leases and
    // their reports, recalls, and the journal's settlements.
    private static readonly HashSet<(Type Interface, string Method)> MoneyMessages =
    [
        (typeof(IAccountGrain), nameof(IAccountGrain.ReserveWithLeaseAsync)),
        (typeof(IAccountGrain), nameof(IAccountGrain.ReturnLeaseAsync)),
        (typeof(IAccountGrain), nameof(IAccountGrain.SettleBatchAsync)),
        (typeof(IApiKeyGrain), nameof(IApiKeyGrain.LeaseAsync)),
        (typeof(IApiKeyGrain), nameof(IApiKeyGrain.EndLeasesAsync)),
        (typeof(IApiKeyGrain), nameof(IApiKeyGrain.RecallLeaseAsync)),
        (typeof(IApiKeyGrain), nameof(IApiKeyGrain.RecordBatchAsync)),
        (typeof(IDataServiceGrain), nameof(IDataServiceGrain.RecordBatchAsync)),
    ];

    private static double _requests;
    private static double _responses;
    private static double _oneWay;
    private static long _requestsLost;
    private static long _responsesLost;
    private static long _oneWayLost;

    /// <summary>Requests lost before they ran.</summary>
    public static long RequestsLost => Interlocked.Read(ref _requestsLost);

    /// <summary>Requests that ran and whose answers were lost.</summary>
    public static long ResponsesLost => Interlocked.Read(ref _responsesLost);

    /// <summary>One-way messages lost.</summary>
    public static long OneWayLost => Interlocked.Read(ref _oneWayLost);

    /// <summary>Loses these shares (0 to 1) of the money messages' requests, answers and one-way messages from now on.</summary>
    public static void Start(double requests, double responses, double oneWay)
    {
        Volatile.Write(ref _requests, requests);
        Volatile.Write(ref _responses, responses);
        Volatile.Write(ref _oneWay, oneWay);
    }

    /// <summary>Loses nothing from now on.</summary>
    public static void Stop() => Start(0, 0, 0);

    /// <summary>True when a message of this method is one the filter may lose.</summary>
    public static bool IsMoneyMessage(Type? grainInterface, string? method) =>
        grainInterface is not null && method is not null && MoneyMessages.Contains((grainInterface, method));

    internal static bool LoseRequest() => Lose(Volatile.Read(ref _requests), ref _requestsLost);

    internal static bool LoseResponse() => Lose(Volatile.Read(ref _responses), ref _responsesLost);

    internal static bool LoseOneWay() => Lose(Volatile.Read(ref _oneWay), ref _oneWayLost);

    private static bool Lose(double share, ref long lost)
    {
        if (share <= 0 || Random.Shared.NextDouble() >= share)
        {
            return false;
        }

        Interlocked.Increment(ref lost);
        return true;
    }
}
