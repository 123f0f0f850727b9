using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests.DataServices;

public sealed class UpstreamAdapterTests
{
    private const string BaseUrl = "https://upstream.example/api";

    private static UpstreamSecrets NewSecrets() =>
        new(Options.Create(new SecretsOptions { Key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) }));

    private static UpstreamAdapter Adapter(ServiceVersionSpec spec, UpstreamSecrets? secrets = null) =>
        new("svc-adapter", new VersionRoute("v1", 1, spec), secrets ?? NewSecrets());

    private static CallRequest Call(string query, string path = "", string method = "GET", string? body = null, string? contentType = null) =>
        new("svc-adapter", "credential", method, path, query, contentType, body is null ? null : Encoding.UTF8.GetBytes(body), null);

    private static UpstreamAnswer Json(int status, string body) => new(status, "application/json", Encoding.UTF8.GetBytes(body));

    [Fact]
    public void PathTemplate_Expand_EscapesEachValueAsOneSegment()
    {
        Assert.True(PathTemplate.TryParse("/phone/{number}/verify/{mode}", out var template, out _));
        var values = new Dictionary<string, string> { ["number"] = "+1 555/0?x#", ["mode"] = "../fast" };

        Assert.True(template.TryExpand(values.GetValueOrDefault, out var path, out _));

        Assert.Equal("/phone/%2B1%20555%2F0%3Fx%23/verify/..%2Ffast", path);
        Assert.Equal(["number", "mode"], template.Parameters);
    }

    [Fact]
    public void PathTemplate_Expand_MissingOrEmptyParameter_ReportsIt()
    {
        Assert.True(PathTemplate.TryParse("/a/{first}/b/{second}", out var template, out _));

        Assert.False(template.TryExpand(name => name == "first" ? "1" : null, out _, out var missing));
        Assert.Equal("second", missing);
        Assert.False(template.TryExpand(name => name == "first" ? string.Empty : "2", out _, out missing));
        Assert.Equal("first", missing);
    }

    [Theory]
    [InlineData("/a/{x")]
    [InlineData("/a/x}")]
    [InlineData("/a/{x}}")]
    [InlineData("/a/}{x}")]
    [InlineData("/a/{{x}}")]
    [InlineData("/a/{}")]
    [InlineData("/a/../b")]
    [InlineData("/a/./b")]
    [InlineData("/a?b=1")]
    [InlineData("/a#b")]
    [InlineData("a/b")]
    [InlineData("")]
    [InlineData("/a b")]
    public void PathTemplate_TryParse_BadTemplate_Refused(string template)
    {
        Assert.False(PathTemplate.TryParse(template, out _, out var error));
        Assert.NotEmpty(error);
    }

    [Fact]
    public void QueryParameters_ParseRenameTake_DecodesRenamesAndReescapes()
    {
        var query = QueryParameters.Parse("?number=%2B49+30&country=DE&x=a%26b&flag");
        Assert.NotNull(query);

        Assert.Equal("+49 30", query.Take("number"));
        Assert.Null(query.Take("number"));
        var renamed = query.Rename(new Dictionary<string, string> { ["country"] = "cc" });

        Assert.Equal("?cc=DE&x=a%26b&flag=", renamed.ToQueryString());
        Assert.Equal("?country=DE&x=a%26b&flag=", query.ToQueryString());
    }

    [Theory]
    [InlineData("a=1")]
    [InlineData("?a=1#frag")]
    [InlineData("?a=1\n")]
    public void QueryParameters_Parse_Malformed_Null(string query) => Assert.Null(QueryParameters.Parse(query));

    [Fact]
    public void TryBuildRequest_TemplateAndParameterMap_ExpandsPathAndRenamesQuery()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, Method: "POST", PathTemplate: "/phone/{number}",
            ParameterMap: new Dictionary<string, string> { ["country"] = "cc" }));

        Assert.True(adapter.TryBuildRequest(Call("?number=%2B4930&country=DE&x=1"), "track-1", out var message, out var error), error);

        Assert.Equal(HttpMethod.Post, message.Method);
        Assert.Equal(BaseUrl + "/phone/%2B4930?cc=DE&x=1", message.RequestUri!.OriginalString);
    }

    [Fact]
    public void TryBuildRequest_TemplateParameterMissing_ErrorNamesIt()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, PathTemplate: "/phone/{number}"));

        Assert.False(adapter.TryBuildRequest(Call("?country=DE"), "track-1", out _, out var error));

        Assert.Contains("'number'", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryBuildRequest_TemplateAndCallerSubPath_Refused()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, PathTemplate: "/phone/{number}"));

        Assert.False(adapter.TryBuildRequest(Call("?number=1", path: "/admin"), "track-1", out _, out var error));
        Assert.NotEmpty(error);
    }

    [Fact]
    public async Task TryBuildRequest_JsonObjectBody_TopLevelFieldsRenamed()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, ParameterMap: new Dictionary<string, string> { ["country"] = "cc", ["name"] = "fullName" }));
        var body = """{"country":"DE","name":"Ann","nested":{"country":"FR"},"other":1}""";

        Assert.True(adapter.TryBuildRequest(Call("?country=DE", method: "POST", body: body, contentType: "application/json"), "track-1", out var message, out var error), error);

        var sent = JsonNode.Parse(await message.Content!.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"cc":"DE","fullName":"Ann","nested":{"country":"FR"},"other":1}"""), sent), sent?.ToJsonString());
        Assert.Equal("application/json", message.Content.Headers.ContentType?.MediaType);
        Assert.Equal(BaseUrl + "?cc=DE", message.RequestUri!.OriginalString);
    }

    [Fact]
    public async Task TryBuildRequest_JsonArrayBody_SentUnchanged()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, ParameterMap: new Dictionary<string, string> { ["country"] = "cc" }));
        var body = """[{"country":"DE"}]""";

        Assert.True(adapter.TryBuildRequest(Call(string.Empty, method: "POST", body: body), "track-1", out var message, out _));

        Assert.Equal(body, await message.Content!.ReadAsStringAsync(TestContext.Current.CancellationToken));
    }

    [Fact]
    public void TryBuildRequest_StaticAndSecretHeaders_OnRequestWithTrackId()
    {
        var secrets = NewSecrets();
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl,
            Headers: new Dictionary<string, string> { ["X-Api-Version"] = "3" },
            SecretHeaders: new Dictionary<string, string> { ["Authorization"] = secrets.Encrypt("Authorization", "Bearer s3cret") }), secrets);

        Assert.True(adapter.TryBuildRequest(Call(string.Empty), "track-42", out var message, out _));

        Assert.False(adapter.SecretsUnavailable);
        Assert.Equal(["3"], message.Headers.GetValues("X-Api-Version"));
        Assert.Equal(["Bearer s3cret"], message.Headers.GetValues("Authorization"));
        Assert.Equal(["track-42"], message.Headers.GetValues(TrackIds.Header));
    }

    [Fact]
    public void Constructor_SecretUnderAnotherKey_SecretsUnavailableAndHeaderNotSent()
    {
        var stored = NewSecrets().Encrypt("Authorization", "Bearer s3cret");
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, SecretHeaders: new Dictionary<string, string> { ["Authorization"] = stored }), NewSecrets());

        Assert.True(adapter.TryBuildRequest(Call(string.Empty), "track-1", out var message, out _));

        Assert.True(adapter.SecretsUnavailable);
        Assert.False(message.Headers.Contains("Authorization"));
    }

    [Fact]
    public void TryBuildRequest_PassThrough_KeepsCallersPathQueryAndMethod()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl + "/"));

        Assert.True(adapter.TryBuildRequest(Call("?x=1&y=%2F&z&x=2", path: "/a/b", method: "PUT"), "track-1", out var message, out _));

        Assert.Equal(HttpMethod.Put, message.Method);
        Assert.Equal(BaseUrl + "/a/b?x=1&y=%2F&z&x=2", message.RequestUri!.OriginalString);
        Assert.Null(message.Content);
    }

    [Fact]
    public void MapResponse_ResponseFields_SelectsAndRenamesByDottedPath()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, ResponseFields: new Dictionary<string, string>
        {
            ["name"] = "data.person.name",
            ["ok"] = "status",
            ["tags"] = "data.tags",
            ["absent"] = "data.person.nope",
        }));

        var mapped = adapter.MapResponse(new UpstreamAnswer(200, "text/json",
            Encoding.UTF8.GetBytes("""{"status":true,"data":{"person":{"name":"Ann","secret":"x"},"tags":["a"]},"internal":1}""")));

        Assert.Equal(200, mapped.Status);
        Assert.StartsWith("application/json", mapped.ContentType, StringComparison.Ordinal);
        var body = JsonNode.Parse(mapped.Body);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"name":"Ann","ok":true,"tags":["a"],"absent":null}"""), body), body?.ToJsonString());
    }

    [Fact]
    public void MapResponse_Non2xx_Untouched()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, ResponseFields: new Dictionary<string, string> { ["name"] = "data.name" }));
        var answer = new UpstreamAnswer(502, "text/plain", Encoding.UTF8.GetBytes("bad gateway"));

        Assert.Same(answer, adapter.MapResponse(answer));
    }

    [Fact]
    public void MapResponse_NoResponseFields_PassedThrough()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl));
        var answer = new UpstreamAnswer(200, "text/plain", Encoding.UTF8.GetBytes("not json"));

        Assert.Same(answer, adapter.MapResponse(answer));
    }

    [Fact]
    public void MapResponse_NonJson2xxWhenMapping_ThrowsInvalidData()
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, ResponseFields: new Dictionary<string, string> { ["name"] = "data.name" }));

        Assert.Throws<InvalidDataException>(() => adapter.MapResponse(new UpstreamAnswer(200, "text/html", Encoding.UTF8.GetBytes("<html>"))));
    }

    [Theory]
    [InlineData("""{"data":{"found":true}}""", true)]
    [InlineData("""{"data":{"found":false}}""", false)]
    [InlineData("""{"data":{"found":2}}""", true)]
    [InlineData("""{"data":{"found":0}}""", false)]
    [InlineData("""{"data":{"found":"yes"}}""", true)]
    [InlineData("""{"data":{"found":""}}""", false)]
    [InlineData("""{"data":{"found":[1]}}""", true)]
    [InlineData("""{"data":{"found":[]}}""", false)]
    [InlineData("""{"data":{"found":{"a":1}}}""", true)]
    [InlineData("""{"data":{"found":{}}}""", false)]
    [InlineData("""{"data":{"found":null}}""", false)]
    [InlineData("""{"data":{}}""", false)]
    [InlineData("""{"data":"found"}""", false)]
    [InlineData("not json", false)]
    public void IsHit_TruthyRule_FollowsFieldValue(string body, bool hit)
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, Hit: new HitRule("data.found")));

        Assert.Equal(hit, adapter.IsHit(Json(200, body)));
    }

    [Theory]
    [InlineData("""{"result":{"code":"MATCH"}}""", true)]
    [InlineData("""{"result":{"code":"match"}}""", false)]
    [InlineData("""{"result":{"code":"NO_MATCH"}}""", false)]
    [InlineData("""{"result":{}}""", false)]
    public void IsHit_EqualsValue_ComparesText(string body, bool hit)
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, Hit: new HitRule("result.code", "MATCH")));

        Assert.Equal(hit, adapter.IsHit(Json(200, body)));
    }

    [Theory]
    [InlineData("""{"n":1}""", "1", true)]
    [InlineData("""{"n":2}""", "1", false)]
    [InlineData("""{"n":true}""", "true", true)]
    public void IsHit_EqualsValueOnNonString_ComparesJsonText(string body, string expected, bool hit)
    {
        var adapter = Adapter(new ServiceVersionSpec(BaseUrl, Hit: new HitRule("n", expected)));

        Assert.Equal(hit, adapter.IsHit(Json(200, body)));
    }

    [Fact]
    public void IsHit_Non2xx_NeverHit()
    {
        var withRule = Adapter(new ServiceVersionSpec(BaseUrl, Hit: new HitRule("data.found")));
        var withoutRule = Adapter(new ServiceVersionSpec(BaseUrl));

        Assert.False(withRule.IsHit(Json(404, """{"data":{"found":true}}""")));
        Assert.False(withoutRule.IsHit(Json(500, "{}")));
        Assert.False(withoutRule.IsHit(Json(302, "{}")));
        Assert.True(withoutRule.IsHit(Json(204, string.Empty)));
    }
}
