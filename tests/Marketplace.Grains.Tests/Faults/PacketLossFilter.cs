using System.Reflection;

namespace Marketplace.Grains.Tests;

/// <summary>
/// Loses money messages arriving at a silo, as a lossy network between silos and front doors would (<see cref="PacketLoss"/>
/// says how much): a lost request never runs and its caller sees the fault a lost message gives (a timeout, or the silo
/// gone); a lost answer is a request that ran and whose caller sees the same fault; a lost one-way message never runs.
/// </summary>
/// <remarks>
/// The fault comes at once rather than after Orleans' response timeout: the callers treat both the same, and the test
/// then loses many messages within seconds. Which fault is drawn at random: both mean the outcome is unknown.
/// </remarks>
public sealed class PacketLossFilter : IIncomingGrainCallFilter
{
    /// <inheritdoc />
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        var method = context.InterfaceMethod;
        if (!PacketLoss.IsMoneyMessage(method?.DeclaringType, method?.Name))
        {
            await context.Invoke();
            return;
        }

        if (method!.GetCustomAttribute<Orleans.Concurrency.OneWayAttribute>() is not null)
        {
            if (!PacketLoss.LoseOneWay())
            {
                await context.Invoke();
            }

            return;
        }

        if (PacketLoss.LoseRequest())
        {
            throw Fault("request");
        }

        await context.Invoke();
        if (PacketLoss.LoseResponse())
        {
            throw Fault("answer");
        }
    }

    private static Exception Fault(string what) => Random.Shared.Next(2) == 0
        ? new TimeoutException($"Packet loss: the {what} was lost.")
        : new SiloUnavailableException($"Packet loss: the {what} was lost.");
}
