using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// "A crash between admission and settlement never charges twice, and any reservation left behind is released after a
/// bounded time": two real host processes on one database; calls admitted through front door B hang at the upstream,
/// B is SIGKILLed, and the account (living on A, checked) must give the held money back after Metering:ReservationTimeout —
/// and without charging anything. (When the killed silo held the account's grain-directory entry, the cluster's recovery
/// re-activates the account, whose in-memory reservations go with the old activation, sooner than the timeout: either
/// way the money is free within the bound. That the timeout itself never releases early is proven on a manual clock by
/// ReservationTimeoutTests.)
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class ReservationRecoveryTests(PostgresFixture postgres)
{
    private const long Price = 5;
    private const int Hanging = 4;
    private static readonly TimeSpan ReservationTimeout = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task FrontDoorKilledWithCallsInFlight_ItsReservationsAreReleasedAfterTheTimeout_AndNothingIsCharged()
    {
        var cancel = TestContext.Current.CancellationToken;
        await using var provider = await TestHosts.StartProviderAsync();
        var providerUrl = provider.Urls.First();
        var settings = new Dictionary<string, string> { ["Metering:ReservationTimeout"] = "00:00:05" };
        await using var cluster = await SiloCluster.StartAsync(postgres, "reservations", 2, settings: settings);
        using var setup = cluster.Admin(0);
        var consumer = await new AdminApi(setup, providerUrl).CreateConsumerAsync(balance: Price * (Hanging + 1), price: Price, timeoutMs: 120_000);

        // The victim is the silo that does not hold the account: the account must outlive the front door that admitted.
        var accountHost = (await cluster.HostsAsync(grains => [grains.GetGrain<IAccountGrain>(consumer.AccountId)]))[0];
        Assert.True(accountHost >= 0, "the account grain is not active after its top-up");
        var survivor = cluster.Silos[accountHost];
        var victim = cluster.Silos[1 - accountHost];
        using var admin = new HttpClient { BaseAddress = survivor.BaseAddress };
        admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);

        using (var provCtl = new HttpClient { BaseAddress = new Uri(providerUrl) })
        {
            using var hang = await provCtl.PutAsJsonAsync("/_control/phone", new { mode = "hang" }, cancel);
            hang.EnsureSuccessStatusCode();
        }

        using var callers = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = Hanging }) { BaseAddress = victim.BaseAddress };
        callers.DefaultRequestHeaders.Add("X-Api-Key", consumer.ApiKey);
        var inFlight = Enumerable.Range(0, Hanging)
            .Select(_ => callers.GetAsync($"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678", cancel))
            .ToArray();

        // Every hanging call has been admitted (its price held) once the account shows them all reserved.
        var admitted = await PollAccountAsync(admin, consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == Price * Hanging, TimeSpan.FromSeconds(20));
        var admittedAt = Stopwatch.StartNew();
        Assert.Equal(Price * Hanging, admitted.GetProperty("reserved").GetInt64());

        victim.Kill();
        foreach (var call in inFlight)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => call);
        }

        // Right after the kill the money is still held: nobody will ever settle it, and only the timeout frees it.
        var orphaned = await GetAccountAsync(admin, consumer.AccountId);
        var orphanedAfter = admittedAt.Elapsed;
        Assert.Equal(Price * Hanging, orphaned.GetProperty("reserved").GetInt64());
        Assert.Equal(Price, orphaned.GetProperty("available").GetInt64());

        var released = await PollAccountAsync(admin, consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0, TimeSpan.FromSeconds(30));
        var releasedAfter = admittedAt.Elapsed;
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Reservations of a killed front door: still held {orphanedAfter.TotalSeconds:F1} s after admission, released {releasedAfter.TotalSeconds:F1} s after admission (timeout {ReservationTimeout.TotalSeconds} s)."));

        Assert.Equal(0, released.GetProperty("reserved").GetInt64());
        Assert.Equal(Price * (Hanging + 1), released.GetProperty("balance").GetInt64());
        Assert.Equal(Price * (Hanging + 1), released.GetProperty("available").GetInt64());
        Assert.Equal(0, released.GetProperty("totalCharged").GetInt64());

        // The freed money is spendable again: the full balance, through the surviving front door.
        using (var provCtl = new HttpClient { BaseAddress = new Uri(providerUrl) })
        {
            using var reset = await provCtl.DeleteAsync("/_control", cancel);
            reset.EnsureSuccessStatusCode();
        }

        using var survivorCallers = new HttpClient { BaseAddress = survivor.BaseAddress };
        survivorCallers.DefaultRequestHeaders.Add("X-Api-Key", consumer.ApiKey);
        for (var i = 0; i < Hanging + 1; i++)
        {
            using var ok = await survivorCallers.GetAsync($"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678", cancel);
            Assert.True(ok.IsSuccessStatusCode, $"call {i} after the release answered {(int)ok.StatusCode}");
        }

        // Every account, key, quota window and rollup agrees with the journal (the killed front door's calls included).
        var reconciliation = await cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(15));
        Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), $"reconciliation: {reconciliation}");
    }

    // Right after the kill a read may meet the dead silo (the grain directory entry it held) and answer 503 "try again"
    // until the cluster has declared it dead (~1-2 s): read again then.
    private static async Task<JsonElement> GetAccountAsync(HttpClient admin, string accountId)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var response = await admin.GetAsync($"/admin/accounts/{accountId}", TestContext.Current.CancellationToken);
            if (response.StatusCode != System.Net.HttpStatusCode.ServiceUnavailable || clock.Elapsed > TimeSpan.FromSeconds(15))
            {
                response.EnsureSuccessStatusCode();
                return JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement.Clone();
            }

            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
    }

    private static async Task<JsonElement> PollAccountAsync(HttpClient admin, string accountId, Func<JsonElement, bool> done, TimeSpan deadline)
    {
        var clock = Stopwatch.StartNew();
        var account = await GetAccountAsync(admin, accountId);
        while (!done(account) && clock.Elapsed < deadline)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
            account = await GetAccountAsync(admin, accountId);
        }

        return account;
    }
}
