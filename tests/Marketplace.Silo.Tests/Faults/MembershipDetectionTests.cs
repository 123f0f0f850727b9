using System.Diagnostics;
using System.Globalization;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// How long the survivors take to declare a failed silo dead, measured on three real host processes: from the signal
/// until the failed silo's row in the membership table says Dead (the survivors write that row when they evict it).
/// </summary>
/// <remarks>
/// The bounds are generous for a loaded machine but far below Orleans' defaults, so losing the tuning in
/// <c>ClusterMembership</c> fails them: by default a killed silo takes about 10–15 s (3 missed probes at 5 s, or more)
/// and a hung one over a minute (the connection liveness check waits 20 s × 3 since its last message).
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class MembershipDetectionTests(PostgresFixture postgres)
{
    private static readonly TimeSpan KillBound = TimeSpan.FromSeconds(6);
    private static readonly TimeSpan HangBound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task SigKill_DeclaredDeadWithinSeconds_SigStop_DeclaredDeadWithinTheLivenessWindow()
    {
        await using var cluster = await SiloCluster.StartAsync(postgres, "membership", 3);
        var clock = Stopwatch.StartNew();

        // SIGKILL: the process and its sockets are gone; probes to it fail at once.
        var killed = cluster.Silos[2];
        var killedAt = clock.Elapsed;
        killed.Kill();
        var killDead = await cluster.WaitForStatusAsync(killed.SiloPort, SiloCluster.Dead, clock, KillBound * 3);
        var killTook = killDead - killedAt;

        // Back to three: a new process on the killed one's ports (a supervisor's restart).
        var restart = Stopwatch.StartNew();
        await cluster.ReplaceAsync(2);
        var restartTook = restart.Elapsed;
        await cluster.WaitForActiveAsync(3, TimeSpan.FromSeconds(30));

        // SIGSTOP: a hung silo. Its sockets stay open, so connections look alive until the liveness window has passed.
        var hung = cluster.Silos[1];
        var stoppedAt = clock.Elapsed;
        await hung.PauseAsync();
        var hangDead = await cluster.WaitForStatusAsync(hung.SiloPort, SiloCluster.Dead, clock, HangBound * 3);
        var hangTook = hangDead - stoppedAt;

        // Woken up, the hung silo reads that it was declared dead and stops itself.
        var resumedAt = clock.Elapsed;
        await hung.ResumeAsync();
        var exited = await hung.WaitForExitAsync(TimeSpan.FromSeconds(30));
        var exitTook = clock.Elapsed - resumedAt;

        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"SIGKILL -> Dead in the membership table after {Seconds(killTook)}; restart on the same ports ready in {restartTook.TotalSeconds:F1} s. " +
            $"SIGSTOP -> Dead after {Seconds(hangTook)}; after SIGCONT the hung silo {(exited ? $"exited (code {hung.ExitCode}) in {exitTook.TotalSeconds:F1} s" : "was still running after 30 s")}."));

        Assert.True(killTook is { } k && k < KillBound, $"a SIGKILLed silo was declared dead after {Seconds(killTook)}; bound {KillBound.TotalSeconds} s");
        Assert.True(hangTook is { } h && h < HangBound, $"a SIGSTOPped silo was declared dead after {Seconds(hangTook)}; bound {HangBound.TotalSeconds} s");
        Assert.True(exited, "the hung silo kept running after SIGCONT although the cluster had declared it dead");

        // The survivors are still members.
        Assert.Equal(SiloCluster.Active, await cluster.StatusAsync(cluster.Silos[0].SiloPort));
        Assert.Equal(SiloCluster.Active, await cluster.StatusAsync(cluster.Silos[2].SiloPort));
    }

    private static string Seconds(TimeSpan? time) => time is { } t ? t.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never (within 3x the bound)";
}
