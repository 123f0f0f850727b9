using System.Diagnostics;
using System.Globalization;
using System.Net;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>
/// The real marketplace host (<c>Marketplace.Silo.dll</c>) as a child OS process, so that tests can kill it the way
/// an operating system does (SIGKILL: no shutdown code runs, nothing is flushed) and start it again on the same database.
/// Configuration goes in as command-line arguments; stdout and stderr are kept (the last lines) for diagnostics.
/// </summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private const int MaxOutputLines = 4000;
    private const int ReadyAttempts = 600;
    private static readonly TimeSpan ReadyPollInterval = TimeSpan.FromMilliseconds(100);

    private readonly Queue<string> _output = new();
    private readonly Lock _outputLock = new();
    private readonly List<string> _arguments;
    private Process? _process;

    /// <param name="connectionString">The PostgreSQL database the host uses.</param>
    /// <param name="clusterId">Cluster id and service id (a restarted silo must use the same to see the same state).</param>
    /// <param name="writeBehindInterval">Persistence:WriteBehindInterval; the host's default (1 s) when null.</param>
    /// <param name="siloPort">Silo-to-silo port; a free one when null.</param>
    /// <param name="gatewayPort">Gateway port; a free one when null.</param>
    /// <param name="httpPort">Front door port; a free one when null.</param>
    /// <param name="settings">More <c>Section:Key</c> settings.</param>
    /// <param name="role">Host:Role (<c>all</c>, <c>silo</c>, <c>frontdoor</c>); the host's default (<c>all</c>) when null.</param>
    public SiloProcess(
        string connectionString,
        string clusterId,
        TimeSpan? writeBehindInterval = null,
        int? siloPort = null,
        int? gatewayPort = null,
        int? httpPort = null,
        IReadOnlyDictionary<string, string>? settings = null,
        string? role = null)
    {
        SiloPort = siloPort ?? Ports.Free();
        GatewayPort = gatewayPort ?? Ports.Free();
        HttpPort = httpPort ?? Ports.Free();
        ClusterId = clusterId;
        Role = role;
        BaseAddress = new Uri($"http://127.0.0.1:{HttpPort.ToString(CultureInfo.InvariantCulture)}/");

        var values = new Dictionary<string, string>
        {
            ["ConnectionStrings:Marketplace"] = connectionString,
            ["Marketplace:AdminKey"] = TestHosts.AdminKey,
            ["Silo:ClusterId"] = clusterId,
            ["Silo:ServiceId"] = clusterId,
            ["Silo:SiloPort"] = SiloPort.ToString(CultureInfo.InvariantCulture),
            ["Silo:GatewayPort"] = GatewayPort.ToString(CultureInfo.InvariantCulture),
            ["Silo:Dashboard"] = "false",
            ["urls"] = BaseAddress.ToString().TrimEnd('/'),
        };
        if (role is not null)
        {
            values["Host:Role"] = role;
        }

        if (writeBehindInterval is { } interval)
        {
            values["Persistence:WriteBehindInterval"] = interval.ToString("c", CultureInfo.InvariantCulture);
        }

        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
        {
            values[key] = value;
        }

        _arguments = [.. values.Select(pair => $"--{pair.Key}={pair.Value}")];
    }

    /// <summary>The front door, e.g. <c>http://127.0.0.1:41234/</c>.</summary>
    public Uri BaseAddress { get; }

    public string ClusterId { get; }

    /// <summary>Host:Role as given (null: the host's default, <c>all</c>); a replacement takes the same.</summary>
    public string? Role { get; }

    public int SiloPort { get; }

    public int GatewayPort { get; }

    public int HttpPort { get; }

    /// <summary>The OS process id once started.</summary>
    public int ProcessId => _process?.Id ?? throw new InvalidOperationException("Not started.");

    public bool HasExited => _process is null || _process.HasExited;

    /// <summary>The exit code once the process has exited.</summary>
    public int ExitCode => _process is { HasExited: true } process ? process.ExitCode : throw new InvalidOperationException("Not exited.");

    /// <summary>The last lines the process wrote to stdout and stderr.</summary>
    public string Output
    {
        get
        {
            lock (_outputLock)
            {
                return string.Join(Environment.NewLine, _output);
            }
        }
    }

    /// <summary>Starts the process and returns once <c>/health/ready</c> answers 200.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_process is not null)
        {
            throw new InvalidOperationException("Already started; use a new SiloProcess to restart.");
        }

        var (dotnet, prefix) = HostCommand();
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
            CreateNoWindow = true,

            // No relative path the host resolves (only the embedded database's, which is not used) may land in the repo.
            WorkingDirectory = Path.GetTempPath(),
        };
        foreach (var argument in prefix.Concat(_arguments))
        {
            start.ArgumentList.Add(argument);
        }

        // The test runner's environment must not reconfigure the child; only the arguments do.
        foreach (var name in start.Environment.Keys.Where(IsMarketplaceVariable).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";

        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, line) => Append("out", line.Data);
        process.ErrorDataReceived += (_, line) => Append("err", line.Data);
        if (!process.Start())
        {
            throw new InvalidOperationException($"Could not start {dotnet}.");
        }

        _process = process;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var http = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        string last = "no answer yet";
        for (var attempt = 0; attempt < ReadyAttempts; attempt++)
        {
            if (process.HasExited)
            {
                await process.WaitForExitAsync(cancellationToken);
                throw new InvalidOperationException(
                    $"Marketplace.Silo exited with code {process.ExitCode} before it was ready.{Environment.NewLine}{Output}");
            }

            try
            {
                using var response = await http.GetAsync("health/ready", cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }

                last = $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}";
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = exception.Message;
            }

            await Task.Delay(ReadyPollInterval, cancellationToken);
        }

        var output = Output;
        Kill();
        throw new TimeoutException(
            $"Marketplace.Silo was not ready after {ReadyAttempts} polls of /health/ready (last: {last}).{Environment.NewLine}{output}");
    }

    /// <summary>SIGKILL on Linux and macOS (TerminateProcess on Windows): the host gets no chance to run any code.</summary>
    public void Kill()
    {
        if (_process is null || _process.HasExited)
        {
            return;
        }

        _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    /// <summary>True between <see cref="PauseAsync"/> and <see cref="ResumeAsync"/>.</summary>
    public bool IsPaused { get; private set; }

    /// <summary>SIGSTOP: the process freezes with its sockets open (a hung silo: connections accepted, nothing answered).</summary>
    public Task PauseAsync() => SignalAsync("STOP", paused: true);

    /// <summary>SIGCONT: a paused process runs again.</summary>
    public Task ResumeAsync() => SignalAsync("CONT", paused: false);

    /// <summary>SIGTERM without waiting: the host starts its graceful shutdown; see <see cref="WaitForExitAsync"/>.</summary>
    public Task TerminateAsync() => SignalAsync("TERM", paused: false);

    /// <summary>Waits until the process has exited; false when it is still running after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        if (_process is null || _process.HasExited)
        {
            return true;
        }

        using var wait = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(wait.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task SignalAsync(string signal, bool paused)
    {
        if (_process is null || _process.HasExited)
        {
            return;
        }

        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException($"SIG{signal} needs a POSIX system.");
        }

        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", _process.Id.ToString(CultureInfo.InvariantCulture)])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        }) ?? throw new InvalidOperationException("Could not start kill.");
        await kill.WaitForExitAsync();
        if (kill.ExitCode != 0 && !_process.HasExited)
        {
            throw new InvalidOperationException($"kill -{signal} {_process.Id} failed: {await kill.StandardError.ReadToEndAsync()}");
        }

        IsPaused = paused;
    }

    /// <summary>Asks the host to stop (SIGTERM) and waits until it has exited; kills it if it takes longer than <paramref name="timeout"/>.</summary>
    public async Task StopAsync(TimeSpan? timeout = null)
    {
        if (_process is null || _process.HasExited)
        {
            return;
        }

        if (OperatingSystem.IsWindows())
        {
            Kill();
            return;
        }

        using (var signal = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        }))
        {
            if (signal is not null)
            {
                await signal.WaitForExitAsync();
            }
        }

        using var wait = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(wait.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
            throw new TimeoutException($"Marketplace.Silo did not stop within {timeout ?? TimeSpan.FromSeconds(30)} of SIGTERM.{Environment.NewLine}{Output}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is null)
        {
            return;
        }

        try
        {
            if (IsPaused)
            {
                // A frozen process would not act on SIGTERM; nothing of a paused silo is worth a graceful stop.
                Kill();
            }

            await StopAsync(TimeSpan.FromSeconds(15));
        }
        catch (TimeoutException)
        {
            // Already killed by StopAsync; a test that cares calls StopAsync itself.
        }
        finally
        {
            _process.Dispose();
        }
    }

    /// <summary>Where Marketplace.Silo.dll is: next to the test assembly (a project reference copies it), else its own bin folder.</summary>
    public static string LocateHostAssembly()
    {
        var besideTests = Path.Combine(AppContext.BaseDirectory, "Marketplace.Silo.dll");
        if (File.Exists(besideTests) && File.Exists(Path.ChangeExtension(besideTests, ".runtimeconfig.json")))
        {
            return besideTests;
        }

        // bin/<Configuration>/<tfm>/ of the test project: use the same configuration and framework for the host.
        var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Name;
        var configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent?.Name ?? "Debug";
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Marketplace.sln")))
            {
                var candidate = Path.Combine(directory.FullName, "src", "Marketplace.Silo", "bin", configuration, tfm, "Marketplace.Silo.dll");
                if (File.Exists(candidate))
                {
                    return candidate;
                }

                throw new FileNotFoundException($"Marketplace.Silo.dll is neither next to the tests nor at {candidate}; build the solution first.");
            }
        }

        throw new FileNotFoundException($"Marketplace.Silo.dll is not next to the tests ({AppContext.BaseDirectory}) and the repository root was not found.");
    }

    private static (string Dotnet, string[] Prefix) HostCommand()
    {
        var assembly = LocateHostAssembly();
        var runtimeConfig = Path.ChangeExtension(assembly, ".runtimeconfig.json");
        var deps = Path.ChangeExtension(assembly, ".deps.json");
        string[] prefix = File.Exists(deps)
            ? ["exec", "--runtimeconfig", runtimeConfig, "--depsfile", deps, assembly]
            : ["exec", "--runtimeconfig", runtimeConfig, assembly];
        return (DotnetExecutable(), prefix);
    }

    private static string DotnetExecutable()
    {
        var name = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";

        // Set by the dotnet CLI for the processes it starts (dotnet test): the very host that runs these tests.
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } hostPath && File.Exists(hostPath))
        {
            return hostPath;
        }

        if (Environment.ProcessPath is { } processPath && Path.GetFileName(processPath) == name)
        {
            return processPath;
        }

        foreach (var variable in new[] { "DOTNET_ROOT", "DOTNET_ROOT_X64", "DOTNET_ROOT_ARM64" })
        {
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root && File.Exists(Path.Combine(root, name)))
            {
                return Path.Combine(root, name);
            }
        }

        return name;
    }

    private static bool IsMarketplaceVariable(string name) =>
        name.StartsWith("ConnectionStrings__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Marketplace__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Silo__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Host__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Persistence__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Database__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Demo__", StringComparison.OrdinalIgnoreCase)
        || name.StartsWith("Serilog__", StringComparison.OrdinalIgnoreCase)
        || name.Equals("ASPNETCORE_URLS", StringComparison.OrdinalIgnoreCase)
        || name.Equals("DOTNET_URLS", StringComparison.OrdinalIgnoreCase);

    private void Append(string stream, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_outputLock)
        {
            _output.Enqueue($"[{stream}] {line}");
            while (_output.Count > MaxOutputLines)
            {
                _output.Dequeue();
            }
        }
    }
}
