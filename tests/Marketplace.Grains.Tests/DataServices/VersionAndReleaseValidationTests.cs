namespace Marketplace.Grains.Tests.DataServices;

public sealed class VersionAndReleaseValidationTests
{
    private static readonly ServiceVersionSpec Version = new(
        "https://upstream.example/api", 2000, "GET", "/phone/{number}",
        new Dictionary<string, string> { ["country"] = "cc" },
        new Dictionary<string, string> { ["X-Api-Version"] = "3" },
        new Dictionary<string, string> { ["Authorization"] = "Bearer s3cret" },
        new Dictionary<string, string> { ["name"] = "data.person.name" },
        new HitRule("data.found"),
        new ProtectionSpec(Retries: 2, Idempotent: true));

    private static readonly string[] Versions = ["v1", "v2"];

    private static readonly ReleaseSpec Release = new(
        new Dictionary<string, int> { ["v1"] = 90, ["v2"] = 10 },
        new Dictionary<string, string> { ["acct-1"] = "v2" });

    private static Dictionary<string, string> Map(string name, string value) => new() { [name] = value };

    /// <summary>Each case has exactly one bad field: the check must report that field and no other.</summary>
    private static readonly Dictionary<string, (Func<Dictionary<string, string[]>> Check, string Field)> Cases = new()
    {
        ["version id upper case"] = (() => Validation.Check("V1", Version), "version"),
        ["version id empty"] = (() => Validation.Check("", Version), "version"),
        ["base url ftp"] = (() => Validation.Check("v1", Version with { BaseUrl = "ftp://x" }), "baseUrl"),
        ["base url not a url"] = (() => Validation.Check("v1", Version with { BaseUrl = "not a url" }), "baseUrl"),
        ["base url with query"] = (() => Validation.Check("v1", Version with { BaseUrl = "https://upstream.example/api?k=1" }), "baseUrl"),
        ["timeout too short"] = (() => Validation.Check("v1", Version with { TimeoutMs = 49 }), "timeoutMs"),
        ["timeout too long"] = (() => Validation.Check("v1", Version with { TimeoutMs = 120_001 }), "timeoutMs"),
        ["method lower case"] = (() => Validation.Check("v1", Version with { Method = "get" }), "method"),
        ["method trace"] = (() => Validation.Check("v1", Version with { Method = "TRACE" }), "method"),
        ["path template unbalanced"] = (() => Validation.Check("v1", Version with { PathTemplate = "/phone/{number" }), "pathTemplate"),
        ["path template dot dot"] = (() => Validation.Check("v1", Version with { PathTemplate = "/../admin" }), "pathTemplate"),
        ["header host"] = (() => Validation.Check("v1", Version with { Headers = Map("Host", "evil.example") }), "headers"),
        ["header track id"] = (() => Validation.Check("v1", Version with { Headers = Map("x-track-id", "t") }), "headers"),
        ["header content length"] = (() => Validation.Check("v1", Version with { Headers = Map("Content-Length", "1") }), "headers"),
        ["header name with space"] = (() => Validation.Check("v1", Version with { Headers = Map("X Bad", "1") }), "headers"),
        ["header value crlf"] = (() => Validation.Check("v1", Version with { Headers = Map("X-Api-Version", "3\r\nHost: evil") }), "headers"),
        ["header value lf"] = (() => Validation.Check("v1", Version with { Headers = Map("X-Api-Version", "3\nX: y") }), "headers"),
        ["secret header host"] = (() => Validation.Check("v1", Version with { SecretHeaders = Map("HOST", "x") }), "secretHeaders"),
        ["secret header value crlf"] = (() => Validation.Check("v1", Version with { SecretHeaders = Map("Authorization", "Bearer a\r\nX: y") }), "secretHeaders"),
        ["secret header also plain"] = (() => Validation.Check("v1", Version with { SecretHeaders = Map("x-api-version", "3") }), "secretHeaders"),
        ["retries not idempotent"] = (() => Validation.Check("v1", Version with { Protection = new ProtectionSpec(Retries: 1) }), "protection.retries"),
        ["retries too many"] = (() => Validation.Check("v1", Version with { Protection = new ProtectionSpec(Retries: 6, Idempotent: true) }), "protection.retries"),
        ["concurrency zero"] = (() => Validation.Check("v1", Version with { Protection = new ProtectionSpec(MaxConcurrency: 0) }), "protection.maxConcurrency"),
        ["failure ratio zero"] = (() => Validation.Check("v1", Version with { Protection = new ProtectionSpec(FailureRatio: 0) }), "protection.failureRatio"),
        ["hit field bad"] = (() => Validation.Check("v1", Version with { Hit = new HitRule("data..found") }), "hit"),
        ["response field path bad"] = (() => Validation.Check("v1", Version with { ResponseFields = Map("name", "data/name") }), "responseFields"),

        ["release weights add to 90"] = (() => Validation.Check(Release with { Weights = new Dictionary<string, int> { ["v1"] = 80, ["v2"] = 10 } }, Versions), "weights"),
        ["release weights add to 110"] = (() => Validation.Check(Release with { Weights = new Dictionary<string, int> { ["v1"] = 100, ["v2"] = 10 } }, Versions), "weights"),
        ["release weights empty"] = (() => Validation.Check(Release with { Weights = new Dictionary<string, int>() }, Versions), "weights"),
        ["release weight unknown version"] = (() => Validation.Check(Release with { Weights = new Dictionary<string, int> { ["v1"] = 100, ["v9"] = 0 } }, Versions), "weights"),
        ["release weight negative"] = (() => Validation.Check(Release with { Weights = new Dictionary<string, int> { ["v1"] = 110, ["v2"] = -10 } }, Versions), "weights"),
        ["release pin unknown version"] = (() => Validation.Check(Release with { Pins = Map("acct-1", "v9") }, Versions), "pins"),
        ["release pin bad key"] = (() => Validation.Check(Release with { Pins = Map("Not An Id", "v1") }, Versions), "pins"),
    };

    public static TheoryData<string> CaseNames => [.. Cases.Keys];

    [Fact]
    public void Check_ValidVersionAndRelease_NoErrors()
    {
        Assert.Empty(Validation.Check("v1", Version));
        Assert.Empty(Validation.Check("v1", new ServiceVersionSpec("http://10.0.0.1:8080")));
        Assert.Empty(Validation.Check(Release, Versions));
        Assert.Empty(Validation.Check(new ReleaseSpec(new Dictionary<string, int> { ["v1"] = 100, ["v2"] = 0 }), Versions));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Check_OneBadField_ReportsThatFieldOnly(string name)
    {
        var (check, field) = Cases[name];

        var errors = check();

        Assert.Equal([field], errors.Keys);
        Assert.Throws<ArgumentException>(() => Validation.ThrowIfInvalid(errors));
    }
}
