using System.Net;
using System.Text;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>Bad input on the version API: a clear problem naming the field, and the service untouched.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ServiceVersionApiTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task DeleteVersion_Unknown_Is404AndServiceUnchanged()
    {
        var service = await F.CreateServiceAsync(await F.CreateProviderAsync());
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");

        using var response = await F.Admin.DeleteAsync($"/admin/services/{service}/versions/v7");
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");

        await Problem.AssertAsync(response, HttpStatusCode.NotFound, "not-found");
        Assert.Equal(before, after);
    }

    [Fact]
    public async Task DeleteVersion_TakingTraffic_Is409AndServiceUnchanged()
    {
        var service = await F.CreateServiceAsync(await F.CreateProviderAsync());
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");

        using var response = await F.Admin.DeleteAsync($"/admin/services/{service}/versions/v1");
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");

        await Problem.AssertAsync(response, HttpStatusCode.Conflict, "conflict");
        Assert.Equal(before, after);
    }

    [Theory]
    [InlineData("""{"baseUrl":"not a url","timeoutMs":1000}""", "baseUrl")]
    [InlineData("""{"baseUrl":"ftp://example.com/x"}""", "baseUrl")]
    [InlineData("""{"baseUrl":"{upstream}?key=1"}""", "baseUrl")]
    [InlineData("""{"baseUrl":"{upstream}","timeoutMs":10}""", "timeoutMs")]
    [InlineData("""{"baseUrl":"{upstream}","pathTemplate":"/verify/{number"}""", "pathTemplate")]
    [InlineData("""{"baseUrl":"{upstream}","pathTemplate":"/verify/number}"}""", "pathTemplate")]
    [InlineData("""{"baseUrl":"{upstream}","pathTemplate":"/a/../_control"}""", "pathTemplate")]
    [InlineData("""{"baseUrl":"{upstream}","protection":{"maxConcurrency":-1}}""", "protection.maxConcurrency")]
    [InlineData("""{"baseUrl":"{upstream}","protection":{"retries":2,"idempotent":false}}""", "protection.retries")]
    [InlineData("""{"baseUrl":"{upstream}","headers":{"Host":"evil.example"}}""", "headers")]
    [InlineData("""{"baseUrl":"{upstream}","secretHeaders":{"Content-Length":"0"}}""", "secretHeaders")]
    [InlineData("""{"baseUrl":"{upstream}","method":"TRACE"}""", "method")]
    public async Task PutVersion_BadInput_Is400NamingTheFieldAndServiceUnchanged(string json, string field)
    {
        var service = await F.CreateServiceAsync(await F.CreateProviderAsync());
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");
        var body = json.Replace("{upstream}", F.ProviderUrl + "/phone", StringComparison.Ordinal);

        using var response = await F.Admin.PutAsync($"/admin/services/{service}/versions/v1", new StringContent(body, Encoding.UTF8, "application/json"));
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");

        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");
        Assert.True(problem.TryGetProperty("errors", out var errors) && errors.TryGetProperty(field, out _), $"no error for {field}: {problem}");
        Assert.Equal(before, after);
    }

    [Theory]
    [InlineData("V1")]
    [InlineData("v1%20x")]
    public async Task PutVersion_BadVersionId_Is4xxProblemAndServiceUnchanged(string version)
    {
        var service = await F.CreateServiceAsync(await F.CreateProviderAsync());
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");
        var body = $$"""{"baseUrl":"{{F.ProviderUrl}}/phone"}""";

        using var response = await F.Admin.PutAsync($"/admin/services/{service}/versions/{version}", new StringContent(body, Encoding.UTF8, "application/json"));
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");

        Assert.InRange((int)response.StatusCode, 400, 499);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(before, after);
    }
}
