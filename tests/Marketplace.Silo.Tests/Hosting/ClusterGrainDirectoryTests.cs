using Marketplace.Silo.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Orleans.Configuration;

namespace Marketplace.Silo.Tests.Hosting;

/// <summary>
/// <c>Silo:GrainDirectory</c> and <c>Silo:GrainDirectoryLease</c> as a silo applies them; the recovery they buy is
/// measured on real processes by <c>SiloFailoverTests</c>.
/// </summary>
public sealed class ClusterGrainDirectoryTests
{
    [Fact]
    public void ByDefault_DistributedDirectory_HoldsADeadSilosGrainsHalfASecondAfterItsDeclaration()
    {
        var (registrations, services) = BuildSilo(new SiloHostOptions());
        using var _ = services;

        // Orleans holds a dead silo's grains for RangeLeaseDuration less the failure-detection window after the
        // declaration; its own default (30 s) made recovery from a killed silo take 23-30 s.
        var membership = services.GetRequiredService<IOptions<ClusterMembershipOptions>>().Value;
        var directory = services.GetRequiredService<IOptions<GrainDirectoryOptions>>().Value;
        var holdAfterDeclaration = directory.RangeLeaseDuration - membership.MaxProbeTimeout * membership.NumMissedProbesLimit;

        Assert.True(IsDistributed(registrations), "the distributed grain directory is not registered");
        Assert.Equal(TimeSpan.FromMilliseconds(500), holdAfterDeclaration);

        // The hold matches how soon a silo declared dead while cut off from the others reads that it is dead.
        Assert.True(membership.TableRefreshTimeout <= holdAfterDeclaration, $"table reread every {membership.TableRefreshTimeout}");
    }

    [Fact]
    public void DefaultDirectory_LeavesOrleansDirectoryInPlace()
    {
        var (registrations, services) = BuildSilo(new SiloHostOptions { GrainDirectory = "default" });
        using var _ = services;

        Assert.False(IsDistributed(registrations), "the distributed grain directory is registered although Default was chosen");
    }

    [Theory]
    [InlineData("Distributed", true)]
    [InlineData(" default ", true)]
    [InlineData("Dht", false)]
    [InlineData("", false)]
    public void GrainDirectory_OnlyTheTwoNames_AreAccepted(string value, bool valid)
    {
        var problems = new SiloHostOptions { GrainDirectory = value }.Validate().ToList();

        Assert.Equal(valid, !problems.Any(problem => problem.StartsWith("Silo:GrainDirectory must be", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData(-1, false)]
    [InlineData(0, true)]
    [InlineData(30, true)]
    [InlineData(31, false)]
    public void GrainDirectoryLease_BetweenZeroAndThirtySeconds_IsAccepted(int seconds, bool valid)
    {
        var problems = new SiloHostOptions { GrainDirectoryLease = TimeSpan.FromSeconds(seconds) }.Validate().ToList();

        Assert.Equal(valid, !problems.Any(problem => problem.StartsWith("Silo:GrainDirectoryLease", StringComparison.Ordinal)));
    }

    private static (IServiceCollection Registrations, ServiceProvider Services) BuildSilo(SiloHostOptions options)
    {
        // The silo's services as AddMarketplaceSilo configures them, built but never started.
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.UseOrleans(silo => silo.UseLocalhostClustering().ConfigureMarketplaceMembership().ConfigureMarketplaceGrainDirectory(options));
        return (builder.Services, builder.Services.BuildServiceProvider());
    }

    // The directory's type is internal to Orleans; its registration is what tells the two apart.
    private static bool IsDistributed(IServiceCollection registrations) =>
        registrations.Any(registration => registration.ServiceType.Name == "DistributedGrainDirectory");
}
