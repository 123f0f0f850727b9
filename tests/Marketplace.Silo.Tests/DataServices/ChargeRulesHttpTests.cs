using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>Charging per hit, and retries only for versions marked idempotent, against the real sample provider.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ChargeRulesHttpTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task PerHit_AnswerWithoutData_IsServedButNotCharged_AnswerWithData_IsCharged()
    {
        await F.ResetProviderAsync();
        var (valid, invalid) = await FindValidAndInvalidNumbersAsync();
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider, "/phone", price: 7, chargeRule: "perHit");
        await F.PutVersionAsync(service, "v1", new { baseUrl = F.ProviderUrl + "/phone", timeoutMs = 5000, hit = new { field = "valid" } });
        var consumer = await F.CreateConsumerAsync(100, service);

        using var miss = await F.CallAsync(service, consumer.ApiKey, "/verify?number=" + Uri.EscapeDataString(invalid));
        using var hit = await F.CallAsync(service, consumer.ApiKey, "/verify?number=" + Uri.EscapeDataString(valid));
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 2);

        Assert.Equal(HttpStatusCode.OK, miss.StatusCode);
        Assert.False((await DataServicesFixture.ReadOkAsync(miss)).GetProperty("valid").GetBoolean());
        Assert.Equal("0", miss.Headers.GetValues("X-Charged").Single());
        Assert.Equal(HttpStatusCode.OK, hit.StatusCode);
        Assert.Equal("7", hit.Headers.GetValues("X-Charged").Single());
        Assert.Equal(100 - 7, account.GetProperty("balance").GetInt64());
        Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
    }

    [Fact]
    public async Task Retries_IdempotentVersion_RetriesAFailingUpstream_OthersCallItOnce()
    {
        await F.ResetProviderAsync();
        var provider = await F.CreateProviderAsync();
        var retried = await F.CreateServiceAsync(provider, "/ip", price: 3);
        await F.PutVersionAsync(retried, "v1", new
        {
            baseUrl = F.ProviderUrl + "/ip", timeoutMs = 5000,
            protection = new { retries = 2, idempotent = true, minimumThroughput = 100 },
        });
        var once = await F.CreateServiceAsync(provider, "/ip", price: 3);
        var consumer = await F.CreateConsumerAsync(100, retried, once);
        await F.SwitchProviderAsync("ip", new { mode = "fail" });

        using var withRetries = await F.CallAsync(retried, consumer.ApiKey, "/geo?ip=8.8.8.8");
        var afterRetried = await F.ProviderCallsAsync("ip");
        using var withoutRetries = await F.CallAsync(once, consumer.ApiKey, "/geo?ip=8.8.8.8");
        var afterOnce = await F.ProviderCallsAsync("ip");
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 2);

        await Problem.AssertAsync(withRetries, HttpStatusCode.BadGateway, "upstream-error");
        await Problem.AssertAsync(withoutRetries, HttpStatusCode.BadGateway, "upstream-error");
        Assert.Equal(3, afterRetried);
        Assert.Equal(1, afterOnce - afterRetried);
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Retries_WithoutIdempotent_AreRefusedAsBadInput()
    {
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider, "/ip", price: 3);

        using var response = await F.Admin.PutAsJsonAsync($"/admin/services/{service}/versions/v2", new
        {
            baseUrl = F.ProviderUrl + "/ip", protection = new { retries = 2, idempotent = false },
        });

        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");
        Assert.True(problem.GetProperty("errors").TryGetProperty("protection.retries", out _), problem.ToString());
    }

    // The sample provider decides validity from a hash of the number; ask it directly which of a few numbers are which.
    private async Task<(string Valid, string Invalid)> FindValidAndInvalidNumbersAsync()
    {
        string? valid = null, invalid = null;
        for (var i = 0; i < 200 && (valid is null || invalid is null); i++)
        {
            var number = $"+49301234{i:D4}";
            var answer = await F.Provider.GetFromJsonAsync<JsonElement>("/phone/verify?number=" + Uri.EscapeDataString(number));
            if (answer.GetProperty("valid").GetBoolean())
            {
                valid ??= number;
            }
            else
            {
                invalid ??= number;
            }
        }

        Assert.True(valid is not null && invalid is not null, "the sample provider gave no valid or no invalid number among 200");
        await F.ResetProviderAsync();
        return (valid!, invalid!);
    }
}
