namespace Marketplace.Grains.Tests.DataServices;

public sealed class GrayReleaseTests
{
    private const string ServiceId = "svc-gray";

    private static ServiceRoute Route(IReadOnlyDictionary<string, int> weights, IReadOnlyDictionary<string, string>? pins = null) =>
        new(ServiceId, 1, "EUR", 1, null, ServiceStatus.Published, ChargeRule.PerSuccess,
            weights.Keys.Order(StringComparer.Ordinal).Select(v => new VersionRoute(v, 1, new ServiceVersionSpec("https://upstream.example/" + v))).ToList(),
            weights, pins ?? new Dictionary<string, string>());

    // Key ids look like the ones the marketplace issues (32 hex digits) and differ only in their last digits, the
    // hardest case for a hash to spread.
    private static IEnumerable<string> Keys(int count) => Enumerable.Range(0, count).Select(i => i.ToString("x32"));

    [Theory]
    [InlineData(90, 10)]
    [InlineData(50, 50)]
    [InlineData(10, 90)]
    [InlineData(1, 99)]
    public void Choose_TenThousandKeys_SharesFollowWeightsWithinTwoPoints(int first, int second)
    {
        var route = Route(new Dictionary<string, int> { ["v1"] = first, ["v2"] = second });

        var chosen = Keys(10_000).Select(k => GrayRelease.Choose(route, k, null)).ToList();

        Assert.All(chosen, v => Assert.Contains(v, new[] { "v1", "v2" }));
        var firstShare = chosen.Count(v => v == "v1") / 100.0;
        Assert.InRange(firstShare, first - 2.0, first + 2.0);
    }

    [Fact]
    public void Choose_SameKeyAndWeights_AlwaysSameVersion()
    {
        var route = Route(new Dictionary<string, int> { ["v1"] = 50, ["v2"] = 30, ["v3"] = 20 });
        // The same weights listed in another order, as another silo may have deserialized them.
        var reordered = Route(new Dictionary<string, int> { ["v3"] = 20, ["v1"] = 50, ["v2"] = 30 });

        foreach (var key in Keys(2_000))
        {
            var version = GrayRelease.Choose(route, key, null);
            Assert.Equal(version, GrayRelease.Choose(route, key, null));
            Assert.Equal(version, GrayRelease.Choose(reordered, key, "acct-any"));
        }
    }

    [Fact]
    public void Choose_KeyPinned_PinWinsOverWeights()
    {
        var route = Route(new Dictionary<string, int> { ["v1"] = 100, ["v2"] = 0 }, new Dictionary<string, string> { ["pinnedkey"] = "v2" });

        Assert.Equal("v2", GrayRelease.Choose(route, "pinnedkey", null));
        Assert.Equal("v2", GrayRelease.Choose(route, "pinnedkey", "acct-1"));
        Assert.Equal("v1", GrayRelease.Choose(route, "otherkey", null));
    }

    [Fact]
    public void Choose_AccountPinned_AppliesOnlyWhenAccountGivenAndKeyPinWins()
    {
        var route = Route(
            new Dictionary<string, int> { ["v1"] = 100, ["v2"] = 0, ["v3"] = 0 },
            new Dictionary<string, string> { ["acct-pinned"] = "v2", ["pinnedkey"] = "v3" });

        Assert.Equal("v2", GrayRelease.Choose(route, "somekey", "acct-pinned"));
        Assert.Equal("v1", GrayRelease.Choose(route, "somekey", null));
        Assert.Equal("v1", GrayRelease.Choose(route, "somekey", "acct-other"));
        Assert.Equal("v3", GrayRelease.Choose(route, "pinnedkey", "acct-pinned"));
    }

    [Fact]
    public void NeedsAccount_OnlyWhenPinsExistAndKeyNotPinned()
    {
        var unpinned = Route(new Dictionary<string, int> { ["v1"] = 100 });
        var pinned = Route(new Dictionary<string, int> { ["v1"] = 100, ["v2"] = 0 }, new Dictionary<string, string> { ["pinnedkey"] = "v2" });

        Assert.False(GrayRelease.NeedsAccount(unpinned, "somekey"));
        Assert.True(GrayRelease.NeedsAccount(pinned, "somekey"));
        Assert.False(GrayRelease.NeedsAccount(pinned, "pinnedkey"));
    }

    [Fact]
    public void Choose_ZeroWeightVersions_NeverChosen()
    {
        var route = Route(new Dictionary<string, int> { ["a0"] = 0, ["v2"] = 100, ["z9"] = 0 });

        Assert.All(Keys(10_000), k => Assert.Equal("v2", GrayRelease.Choose(route, k, null)));
    }
}
