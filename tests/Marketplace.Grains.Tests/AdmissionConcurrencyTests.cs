namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class AdmissionConcurrencyTests(ClusterFixture fixture)
{
    private const int Calls = 2000;
    private const int KeyCount = 5;

    [Theory]
    [InlineData(0L, 100, 0L)]
    [InlineData(50L, 150, -50L)]
    public async Task Admit_ConcurrentCallsOverManyKeys_AdmitsExactlyWhatBalanceAndCreditCover(
        long creditLimit, int expectedAdmitted, long expectedFinalBalance)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100, creditLimit);
        var serviceId = TestIds.Service();
        var keys = new List<(string KeyId, string Secret)>();
        for (var i = 0; i < KeyCount; i++)
        {
            var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
            keys.Add((keyId, secret));
        }

        var results = await Task.WhenAll(Enumerable.Range(0, Calls).Select(i =>
        {
            var (keyId, secret) = keys[i % KeyCount];
            return fixture.Grains.GetGrain<IApiKeyGrain>(keyId)
                .AdmitAsync(new AdmitRequest(secret, serviceId, 1, ClusterFixture.Currency, $"track-{i:D6}"))
                .AsTask();
        }));

        var admitted = results.Where(r => r.Outcome == AdmitOutcome.Admitted).ToList();
        Assert.Equal(expectedAdmitted, admitted.Count);
        Assert.Equal(Calls - expectedAdmitted, results.Count(r => r.Outcome == AdmitOutcome.InsufficientBalance));
        Assert.All(admitted, r => Assert.Equal(1, r.Reserved));

        // Each admission saw the account one step further: the availabilities left are exactly n-1 .. 0.
        Assert.Equal(Enumerable.Range(0, expectedAdmitted).Select(n => (long)n), admitted.Select(r => r.Available).Order());

        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var held = await account.GetAsync();
        Assert.Equal(100, held!.Balance);
        Assert.Equal(expectedAdmitted, held.Reserved);
        Assert.Equal(0, held.Available);

        foreach (var result in admitted)
        {
            await account.SettleBatchAsync(new SettlementBatch(result.Reserved, result.Reserved,
                [new ServiceUsageDelta(serviceId, 1, 1, 0, result.Reserved)], [new HoldRelease(result.Hold, result.Reserved)]));
        }

        var settled = await Poll.UntilAsync(async () => (await account.GetAsync())!, a => a.Usage.Calls >= expectedAdmitted);
        Assert.Equal(expectedAdmitted, settled.Usage.Calls);
        Assert.Equal(expectedFinalBalance, settled.Balance);
        Assert.Equal(0, settled.Reserved);
        Assert.Equal(0, settled.Available);
        Assert.Equal(expectedAdmitted, settled.TotalCharged);
        Assert.Equal(expectedAdmitted, settled.Usage.CallsByService[serviceId]);
    }
}
