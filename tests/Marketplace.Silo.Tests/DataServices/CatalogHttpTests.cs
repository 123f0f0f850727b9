using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>The consumers' catalog (<c>/v1/services</c>) and what the service statuses mean for calls.</summary>
[Collection(PostgresCollection.Name)]
public sealed class CatalogHttpTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task Catalog_SearchWithCategory_ListsOnlyPublishedServicesPagedWithTotal()
    {
        var prefix = "Findme" + Guid.NewGuid().ToString("N")[..8];
        var category = "cat-" + Guid.NewGuid().ToString("N")[..8];
        var provider = await F.CreateProviderAsync();
        // Created out of name order: the catalog sorts by name.
        var c = await F.CreateServiceAsync(provider, name: prefix + " C", category: category);
        var a = await F.CreateServiceAsync(provider, name: prefix + " A", category: category);
        var b = await F.CreateServiceAsync(provider, name: prefix + " B", category: category);
        await F.CreateServiceAsync(provider, name: prefix + " D other category", category: "other-" + category);
        await F.CreateServiceAsync(provider, name: prefix + " E draft", category: category, status: "draft");
        await SetStatusAsync(await F.CreateServiceAsync(provider, name: prefix + " F suspended", category: category), "suspended");
        await SetStatusAsync(await F.CreateServiceAsync(provider, name: prefix + " G retired", category: category), "retired");

        var first = await F.Anonymous.GetFromJsonAsync<JsonElement>($"/v1/services?search={prefix}&category={category}&page=1&pageSize=2");
        var second = await F.Anonymous.GetFromJsonAsync<JsonElement>($"/v1/services?search={prefix.ToLowerInvariant()}&category={category}&page=2&pageSize=2");
        var all = await F.Anonymous.GetFromJsonAsync<JsonElement>($"/v1/services?search={prefix}&pageSize=100");

        Assert.Equal([a, b], Ids(first));
        Assert.Equal([c], Ids(second));
        Assert.Equal(3, first.GetProperty("total").GetInt32());
        Assert.Equal(3, second.GetProperty("total").GetInt32());
        Assert.Equal(1, first.GetProperty("page").GetInt32());
        Assert.Equal(2, first.GetProperty("pageSize").GetInt32());
        Assert.Equal(4, all.GetProperty("total").GetInt32());
        Assert.All(all.GetProperty("items").EnumerateArray(), item => Assert.Equal("published", item.GetProperty("status").GetString()));
    }

    [Fact]
    public async Task Call_ToDraftOrRetiredIs404_ToSuspendedIs503_AndNoneIsCharged()
    {
        var provider = await F.CreateProviderAsync();
        var draft = await F.CreateServiceAsync(provider, status: "draft");
        var retired = await F.CreateServiceAsync(provider);
        var suspended = await F.CreateServiceAsync(provider);
        await SetStatusAsync(retired, "retired");
        await SetStatusAsync(suspended, "suspended");
        var consumer = await F.CreateConsumerAsync(100, draft, retired, suspended);

        using var toDraft = await F.CallAsync(draft, consumer.ApiKey);
        using var toRetired = await F.CallAsync(retired, consumer.ApiKey);
        using var toSuspended = await F.CallAsync(suspended, consumer.ApiKey);
        using var readDraft = await F.Anonymous.GetAsync($"/v1/services/{draft}");
        using var readRetired = await F.Anonymous.GetAsync($"/v1/services/{retired}");
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 0);

        await Problem.AssertAsync(toDraft, HttpStatusCode.NotFound, "unknown-service");
        await Problem.AssertAsync(toRetired, HttpStatusCode.NotFound, "unknown-service");
        await Problem.AssertAsync(toSuspended, HttpStatusCode.ServiceUnavailable, "service-suspended");
        Assert.True(toSuspended.Headers.Contains("Retry-After"));
        await Problem.AssertAsync(readDraft, HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(readRetired, HttpStatusCode.NotFound, "not-found");
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Status_SuspendedServicePublishedAgain_IsCallableAgain()
    {
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider);
        var consumer = await F.CreateConsumerAsync(100, service);
        await SetStatusAsync(service, "suspended");
        using var whileSuspended = await F.CallAsync(service, consumer.ApiKey);

        await SetStatusAsync(service, "published");
        using var afterwards = await F.CallAsync(service, consumer.ApiKey);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, whileSuspended.StatusCode);
        Assert.Equal(HttpStatusCode.OK, afterwards.StatusCode);
    }

    [Theory]
    [InlineData("pageSize=0")]
    [InlineData("pageSize=1000")]
    [InlineData("page=0")]
    [InlineData("page=-3&pageSize=5")]
    public async Task Catalog_BadPaging_Is400Problem(string query)
    {
        using var response = await F.Anonymous.GetAsync($"/v1/services?{query}");

        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");
        Assert.True(problem.TryGetProperty("errors", out _), problem.ToString());
    }

    [Theory]
    [InlineData("pageSize=abc")]
    [InlineData("page=99999999999")]
    public async Task Catalog_UnparsablePaging_Is400Problem(string query)
    {
        using var response = await F.Anonymous.GetAsync($"/v1/services?{query}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    private async Task SetStatusAsync(string service, string status)
    {
        using var response = await F.Admin.PostAsJsonAsync($"/admin/services/{service}/status", new { status });
        var info = await DataServicesFixture.ReadOkAsync(response);
        Assert.Equal(status, info.GetProperty("status").GetString());
    }

    private static List<string> Ids(JsonElement page) => [.. page.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("id").GetString()!)];
}
