namespace Marketplace.Grains.Tests;

public sealed class ValidationTests
{
    private static readonly DateTimeOffset Now = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);
    private static readonly ProviderSpec Provider = new("Seller", "ops@seller.example");
    private static readonly DataServiceSpec Service = new("Weather", "seller-1", "https://upstream.example/api", 5, "EUR", "Forecasts", 2000);
    private static readonly AccountSpec Account = new("Buyer", "EUR", 100);
    private static readonly ApiKeySpec Key = new("acct-1", "Key", ["svc-1"], Now.AddDays(1));

    /// <summary>Each case has exactly one bad field: the check must report that field and no other.</summary>
    private static readonly Dictionary<string, (Func<Dictionary<string, string[]>> Check, string Field)> Cases = new()
    {
        ["provider id uppercase"] = (() => Validation.Check("Seller", Provider), "id"),
        ["provider id one char"] = (() => Validation.Check("s", Provider), "id"),
        ["provider id leading dash"] = (() => Validation.Check("-seller", Provider), "id"),
        ["provider id 64 chars"] = (() => Validation.Check(new string('s', 64), Provider), "id"),
        ["provider id underscore"] = (() => Validation.Check("sel_ler", Provider), "id"),
        ["provider id trailing newline"] = (() => Validation.Check("seller\n", Provider), "id"),
        ["provider name empty"] = (() => Validation.Check("seller", Provider with { Name = "" }), "name"),
        ["provider name blank"] = (() => Validation.Check("seller", Provider with { Name = "   " }), "name"),
        ["provider name 201 chars"] = (() => Validation.Check("seller", Provider with { Name = new string('n', 201) }), "name"),
        ["provider name control char"] = (() => Validation.Check("seller", Provider with { Name = "a\u0007b" }), "name"),
        ["provider email without at"] = (() => Validation.Check("seller", Provider with { ContactEmail = "ops.seller.example" }), "contactEmail"),
        ["provider email too long"] = (() => Validation.Check("seller", Provider with { ContactEmail = new string('e', 250) + "@x.io" }), "contactEmail"),

        ["service id bad"] = (() => Validation.Check("Weather!", Service), "id"),
        ["service name empty"] = (() => Validation.Check("weather", Service with { Name = "" }), "name"),
        ["service provider id bad"] = (() => Validation.Check("weather", Service with { ProviderId = "Seller 1" }), "providerId"),
        ["service url ftp"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "ftp://x" }), "upstreamBaseUrl"),
        ["service url not a url"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "not a url" }), "upstreamBaseUrl"),
        ["service url relative"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "upstream.example/api" }), "upstreamBaseUrl"),
        ["service url with query"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "https://upstream.example/api?k=1" }), "upstreamBaseUrl"),
        ["service url with fragment"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "https://upstream.example/api#f" }), "upstreamBaseUrl"),
        ["service url with credentials"] = (() => Validation.Check("weather", Service with { UpstreamBaseUrl = "https://user:pw@upstream.example/api" }), "upstreamBaseUrl"),
        ["service price negative"] = (() => Validation.Check("weather", Service with { PricePerCall = -1 }), "pricePerCall"),
        ["service price too high"] = (() => Validation.Check("weather", Service with { PricePerCall = 1_000_000_001 }), "pricePerCall"),
        ["service currency lower case"] = (() => Validation.Check("weather", Service with { Currency = "eur" }), "currency"),
        ["service currency four letters"] = (() => Validation.Check("weather", Service with { Currency = "EURO" }), "currency"),
        ["service currency empty"] = (() => Validation.Check("weather", Service with { Currency = "" }), "currency"),
        ["service timeout 10"] = (() => Validation.Check("weather", Service with { TimeoutMs = 10 }), "timeoutMs"),
        ["service timeout too long"] = (() => Validation.Check("weather", Service with { TimeoutMs = 120_001 }), "timeoutMs"),
        ["service description too long"] = (() => Validation.Check("weather", Service with { Description = new string('d', 2001) }), "description"),

        ["account id bad"] = (() => Validation.Check("acct 1", Account), "id"),
        ["account name control char"] = (() => Validation.Check("acct-1", Account with { Name = "Buyer\n" }), "name"),
        ["account currency lower case"] = (() => Validation.Check("acct-1", Account with { Currency = "usd" }), "currency"),
        ["account currency trailing newline"] = (() => Validation.Check("acct-1", Account with { Currency = "EUR\n" }), "currency"),
        ["account credit negative"] = (() => Validation.Check("acct-1", Account with { CreditLimit = -1 }), "creditLimit"),
        ["account credit too high"] = (() => Validation.Check("acct-1", Account with { CreditLimit = 1_000_000_000_001 }), "creditLimit"),

        ["top-up zero"] = (() => Validation.CheckTopUp(0, "payment"), "amount"),
        ["top-up negative"] = (() => Validation.CheckTopUp(-1, "payment"), "amount"),
        ["top-up too high"] = (() => Validation.CheckTopUp(1_000_000_000_001, "payment"), "amount"),
        ["top-up reason null"] = (() => Validation.CheckTopUp(10, null), "reason"),
        ["top-up reason blank"] = (() => Validation.CheckTopUp(10, " "), "reason"),
        ["top-up reason 501 chars"] = (() => Validation.CheckTopUp(10, new string('r', 501)), "reason"),

        ["key account id bad"] = (() => Validation.Check(Key with { AccountId = "ACCT" }, Now), "accountId"),
        ["key name empty"] = (() => Validation.Check(Key with { Name = "" }, Now), "name"),
        ["key services empty"] = (() => Validation.Check(Key with { Services = [] }, Now), "services"),
        ["key services bad id"] = (() => Validation.Check(Key with { Services = ["svc-1", "Bad Id"] }, Now), "services"),
        ["key services too many"] = (() => Validation.Check(Key with { Services = [.. Enumerable.Range(0, 1001).Select(i => $"svc-{i}")] }, Now), "services"),
        ["key expires now"] = (() => Validation.Check(Key with { ExpiresAt = Now }, Now), "expiresAt"),
        ["key expired"] = (() => Validation.Check(Key with { ExpiresAt = Now.AddSeconds(-1) }, Now), "expiresAt"),
    };

    public static TheoryData<string> CaseNames => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Check_BadInput_NamesTheFieldInErrors(string caseName)
    {
        var (check, field) = Cases[caseName];

        var errors = check();

        Assert.Equal([field], errors.Keys);
        Assert.NotEmpty(errors[field]);
        Assert.All(errors[field], message => Assert.False(string.IsNullOrWhiteSpace(message)));
        var thrown = Assert.Throws<ArgumentException>(() => Validation.ThrowIfInvalid(errors));
        Assert.Contains(errors[field][0], thrown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_ValidSpecs_NoErrors()
    {
        Assert.Empty(Validation.Check("seller-1", Provider));
        Assert.Empty(Validation.Check("seller-1", Provider with { ContactEmail = null }));
        Assert.Empty(Validation.Check("weather", Service));
        Assert.Empty(Validation.Check("weather", Service with { UpstreamBaseUrl = "http://10.0.0.1:8080", PricePerCall = 0, Description = null }));
        Assert.Empty(Validation.Check("acct-1", Account));
        Assert.Empty(Validation.Check("acct-1", Account with { CreditLimit = 0 }));
        Assert.Empty(Validation.CheckTopUp(1, "payment"));
        Assert.Empty(Validation.Check(Key, Now));
        Assert.Empty(Validation.Check(Key with { ExpiresAt = null }, Now));
        Validation.ThrowIfInvalid([]);
    }

    [Fact]
    public void Check_SeveralBadFields_NamesEachOne()
    {
        var errors = Validation.Check("Bad Id", new DataServiceSpec("", "Bad", "ftp://x", -1, "eur", null, 0));

        Assert.Equal(
            ["currency", "id", "name", "pricePerCall", "providerId", "timeoutMs", "upstreamBaseUrl"],
            errors.Keys.Order(StringComparer.Ordinal));
    }
}
