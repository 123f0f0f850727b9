using System.Net;
using System.Text;
using Marketplace.Silo.Hosting;

namespace Marketplace.Silo.Tests.Hosting;

/// <summary>The operator's reconcile command against a canned front door; the live one is in <c>CallLogHttpTests</c>.</summary>
public sealed class ReconcileCommandTests : IDisposable
{
    private readonly string _keyFile = Path.GetTempFileName();

    public ReconcileCommandTests() => File.WriteAllText(_keyFile, "an-admin-key-for-this-test\n");

    public void Dispose() => File.Delete(_keyFile);

    [Fact]
    public async Task NothingDiffers_PrintsTheCountAndExitsZero_SendingTheKeyFromTheFile()
    {
        var frontDoor = new CannedFrontDoor(HttpStatusCode.OK,
            """{"accounts":12,"inconsistent":0,"consistent":true,"pendingOnThisNode":0,"differences":[]}""");
        var (output, error) = (new StringWriter(), new StringWriter());

        var exitCode = await ReconcileCommand.RunAsync(["--url", "http://127.0.0.1:1", "--admin-key-file", _keyFile], output, error, frontDoor);

        Assert.Equal(0, exitCode);
        Assert.Equal("12 accounts reconciled with the journal: no difference." + Environment.NewLine, output.ToString());
        Assert.Equal("/admin/reconciliation", frontDoor.Asked!.RequestUri!.AbsolutePath);
        Assert.Equal("an-admin-key-for-this-test", frontDoor.Asked.Headers.GetValues("X-Admin-Key").Single());
    }

    [Fact]
    public async Task Json_PrintsTheReportAsItCame()
    {
        const string report = """{"accounts":1,"inconsistent":0,"consistent":true,"pendingOnThisNode":0,"differences":[]}""";
        var output = new StringWriter();

        var exitCode = await ReconcileCommand.RunAsync(["--admin-key-file", _keyFile, "--json"], output, new StringWriter(),
            new CannedFrontDoor(HttpStatusCode.OK, report));

        Assert.Equal(0, exitCode);
        Assert.Equal(report, output.ToString().Trim());
    }

    [Theory]
    [InlineData(HttpStatusCode.Unauthorized)]
    [InlineData(HttpStatusCode.ServiceUnavailable)]
    public async Task FrontDoorRefuses_ExitsTwoWithItsAnswer(HttpStatusCode status)
    {
        var error = new StringWriter();

        var exitCode = await ReconcileCommand.RunAsync(["--admin-key-file", _keyFile], new StringWriter(), error,
            new CannedFrontDoor(status, """{"type":"urn:marketplace:problem:x"}"""));

        Assert.Equal(2, exitCode);
        Assert.Contains(((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture), error.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("an-admin-key-for-this-test", error.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--url", "not a url")]
    [InlineData("--wait", "-1")]
    [InlineData("--admin-key", "on-the-command-line")]
    [InlineData("--unknown")]
    public async Task BadArguments_PrintUsageAndExitTwo(params string[] args)
    {
        var error = new StringWriter();

        var exitCode = await ReconcileCommand.RunAsync([.. args, "--admin-key-file", _keyFile], new StringWriter(), error,
            new CannedFrontDoor(HttpStatusCode.OK, "{}"));

        Assert.Equal(2, exitCode);
        Assert.StartsWith("usage: Marketplace.Silo reconcile", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task MissingKeyFile_ExitsTwo()
    {
        var error = new StringWriter();

        var exitCode = await ReconcileCommand.RunAsync(["--admin-key-file", _keyFile + ".missing"], new StringWriter(), error);

        Assert.Equal(2, exitCode);
        Assert.Contains("does not exist", error.ToString(), StringComparison.Ordinal);
    }

    private sealed class CannedFrontDoor(HttpStatusCode status, string body) : HttpMessageHandler
    {
        public HttpRequestMessage? Asked { get; private set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Asked = request;
            return Task.FromResult(new HttpResponseMessage(status) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
        }
    }
}
