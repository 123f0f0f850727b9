using System.Net;
using Marketplace.Testing;

namespace Marketplace.Grains.Tests.Alerts;

public sealed class AlertValidationTests
{
    private static Dictionary<string, string[]> Check(string url, AlertEvent[]? events = null, int[]? thresholds = null, bool allowPrivate = false) =>
        AlertValidation.Check(new AlertSpec(url, events ?? [AlertEvent.Quota], thresholds ?? [80, 100]), allowPrivate);

    [Theory]
    [InlineData("https://hooks.example.com/marketplace")]
    [InlineData("http://hooks.example.com:8080/a/b?token=1")]
    [InlineData("https://93.184.216.34/hook")]
    [InlineData("https://[2606:4700::1111]/hook")]
    public void Check_PublicHttpUrl_IsValid(string url) => Assert.Empty(Check(url));

    [Theory]
    [InlineData("")]
    [InlineData("/relative/hook")]
    [InlineData("ftp://hooks.example.com/x")]
    [InlineData("https://user:pass@hooks.example.com/x")]
    [InlineData("https://hooks.example.com/x#fragment")]
    [InlineData("https://localhost/hook")]
    [InlineData("http://app.localhost/hook")]
    [InlineData("http://127.0.0.1:8080/hook")]
    [InlineData("http://10.1.2.3/hook")]
    [InlineData("http://172.16.0.1/hook")]
    [InlineData("http://192.168.1.1/hook")]
    [InlineData("http://169.254.169.254/latest/meta-data")]
    [InlineData("http://100.64.0.1/hook")]
    [InlineData("http://0.0.0.0/hook")]
    [InlineData("http://[::1]/hook")]
    [InlineData("http://[fd00::1]/hook")]
    [InlineData("http://[fe80::1]/hook")]
    [InlineData("http://[::ffff:127.0.0.1]/hook")]
    public void Check_BadOrPrivateUrl_IsRefused(string url) => Assert.Equal(["url"], Check(url).Keys);

    [Fact]
    public void Check_UrlLongerThan2048_IsRefused()
    {
        var url = "https://hooks.example.com/" + new string('a', 2048 - 26);
        Assert.Equal(2048, url.Length);

        Assert.Empty(Check(url));
        Assert.Equal(["url"], Check(url + "a").Keys);
    }

    [Fact]
    public void Check_PrivateUrlWhenAllowed_IsValid() => Assert.Empty(Check("http://127.0.0.1:8080/hook", allowPrivate: true));

    [Theory]
    [InlineData(new int[0])]
    [InlineData(new[] { 0 })]
    [InlineData(new[] { 101 })]
    [InlineData(new[] { 80, 80 })]
    [InlineData(new[] { 10, 20, 30, 40, 50, 60 })]
    public void Check_BadThresholds_AreRefused(int[] thresholds) => Assert.Equal(["thresholds"], Check("https://hooks.example.com/x", thresholds: thresholds).Keys);

    [Fact]
    public void Check_BadEvents_AreRefused()
    {
        Assert.Equal(["events"], Check("https://hooks.example.com/x", events: []).Keys);
        Assert.Equal(["events"], Check("https://hooks.example.com/x", events: [AlertEvent.Quota, AlertEvent.Quota]).Keys);
        Assert.Equal(["events"], Check("https://hooks.example.com/x", events: [(AlertEvent)7]).Keys);
        Assert.Empty(Check("https://hooks.example.com/x", events: [AlertEvent.Balance, AlertEvent.Quota], thresholds: [1, 100, 50, 25, 75]));
    }

    [Theory]
    [InlineData("8.8.8.8", true)]
    [InlineData("2001:4860:4860::8888", true)]
    [InlineData("172.32.0.1", true)]
    [InlineData("172.31.255.255", false)]
    [InlineData("224.0.0.1", false)]
    [InlineData("::", false)]
    [InlineData("::ffff:10.0.0.1", false)]
    public void IsPublic_ClassifiesAddresses(string address, bool expected) => Assert.Equal(expected, WebhookAddresses.IsPublic(IPAddress.Parse(address)));

    [Fact]
    public async Task Connect_ToLoopback_IsRefusedUnlessPrivateNetworksAreAllowed()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        using var guarded = Client(allowPrivate: false);
        using var open = Client(allowPrivate: true);

        var refused = await Assert.ThrowsAsync<HttpRequestException>(() => guarded.PostAsync(receiver.Url("guard"), new StringContent("{}")));
        using var allowed = await open.PostAsync(receiver.Url("guard"), new StringContent("{}"));

        Assert.Contains("no public address", refused.ToString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Single(receiver.Of("guard"));
    }

    private static HttpClient Client(bool allowPrivate) => new(new SocketsHttpHandler
    {
        ConnectCallback = (context, cancellationToken) => WebhookAddresses.ConnectAsync(context, allowPrivate, cancellationToken),
    });

    [Fact]
    public void Sign_IsHmacSha256OfTimestampDotBody()
    {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        var header = WebhookSignature.Sign("whsec_test", 1_700_000_000, "{\"a\":1}");

        Assert.Equal("t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789", header);
    }
}
