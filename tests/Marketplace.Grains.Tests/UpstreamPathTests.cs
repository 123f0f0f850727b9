namespace Marketplace.Grains.Tests;

public sealed class UpstreamPathTests
{
    private const string Base = "https://upstream.example/api";

    [Theory]
    [InlineData("v1/items", "?a=1&b=2", "https://upstream.example/api/v1/items?a=1&b=2")]
    [InlineData("/v1/items/", "", "https://upstream.example/api/v1/items")]
    [InlineData("", "", "https://upstream.example/api")]
    [InlineData("", "?q=x", "https://upstream.example/api?q=x")]
    [InlineData("my file", "", "https://upstream.example/api/my%20file")]
    [InlineData("a#b", "", "https://upstream.example/api/a%23b")]
    [InlineData("a?b", "", "https://upstream.example/api/a%3Fb")]
    [InlineData("%2e%2e/secret", "", "https://upstream.example/api/%252e%252e/secret")]
    public void TryBuild_AllowedPath_JoinsBasePathAndQuery(string path, string query, string expected)
    {
        Assert.True(UpstreamPath.TryBuild(Base, path, query, out var uri));
        Assert.Equal(expected, uri.AbsoluteUri);
        Assert.StartsWith("/api", uri.AbsolutePath, StringComparison.Ordinal);
        Assert.Equal(string.Empty, uri.Fragment);
    }

    [Theory]
    [InlineData("..", "")]
    [InlineData("a/../../b", "")]
    [InlineData("/..", "")]
    [InlineData(".", "")]
    [InlineData("a/./b", "")]
    [InlineData("a\\b", "")]
    [InlineData("..\\admin", "")]
    [InlineData("a\u0000b", "")]
    [InlineData("a\r\nb", "")]
    [InlineData("a\tb", "")]
    [InlineData("ok", "?a=1#frag")]
    [InlineData("ok", "?a=1\r\nX-Injected: 1")]
    [InlineData("ok", "a=1")]
    public void TryBuild_EscapingOrUnsafeInput_Refused(string path, string query)
    {
        Assert.False(UpstreamPath.TryBuild(Base, path, query, out _));
    }

    [Fact]
    public void TryBuild_OverlongPathOrQuery_Refused()
    {
        Assert.True(UpstreamPath.TryBuild(Base, new string('a', 2048), "", out _));
        Assert.False(UpstreamPath.TryBuild(Base, new string('a', 2049), "", out _));
        Assert.False(UpstreamPath.TryBuild(Base, "ok", "?" + new string('a', 8192), out _));
    }
}
