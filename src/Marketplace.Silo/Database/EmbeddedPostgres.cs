using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Marketplace.Silo.Database;

/// <summary>
/// Settings for <see cref="EmbeddedPostgres"/>, the private PostgreSQL server started from the
/// machine's installed PostgreSQL binaries.
/// </summary>
public sealed class EmbeddedPostgresOptions
{
    /// <summary>
    /// Directory holding the cluster's files. Relative paths resolve against
    /// <see cref="Environment.CurrentDirectory"/>. Created and initialised on first start.
    /// </summary>
    public string DataDirectory { get; set; } = ".data/postgres";

    /// <summary>TCP port on 127.0.0.1 to listen on; 0 picks a free loopback port.</summary>
    public int Port { get; set; } = 55432;

    /// <summary>Database created (if missing) once the server is up.</summary>
    public string Database { get; set; } = "marketplace";

    /// <summary>
    /// Directory holding <c>initdb</c> and <c>pg_ctl</c>; <see langword="null"/> discovers it
    /// (see <see cref="EmbeddedPostgres.FindBinDirectory"/>).
    /// </summary>
    public string? BinDirectory { get; set; }
}

/// <summary>
/// Runs a private PostgreSQL server (trust authentication, loopback only) from the installed
/// PostgreSQL binaries. When the process runs as root the server runs as the <c>postgres</c> OS user.
/// If a server is already running on the data directory it is reused and left running on stop.
/// </summary>
public sealed partial class EmbeddedPostgres : IAsyncDisposable
{
    private const string SuperUser = "marketplace";
    private const string ServerOsUser = "postgres";
    private const string BinDirectoryVariable = "MARKETPLACE_PG_BIN";
    private const int StartAttempts = 5;

    private static readonly TimeSpan _shortCommandTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan _initdbTimeout = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan _startStopTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan _connectTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan _lockTimeout = TimeSpan.FromMinutes(3);
    private static readonly object _portLock = new();
    private static readonly HashSet<int> _reservedPorts = [];

    private readonly EmbeddedPostgresOptions _options;
    private readonly ILogger<EmbeddedPostgres> _logger;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly string _dataDirectory;
    private readonly bool _runAsServerUser;
    private string? _binDirectory;
    private string? _connectionString;
    private int _port;
    private int _reservedPort;
    private int _serverPid;
    private bool _started;

    /// <summary>Creates the server wrapper; nothing happens until <see cref="StartAsync"/>.</summary>
    /// <param name="options">Where the data lives, which port and database to use.</param>
    /// <param name="logger">Logger for start/stop messages.</param>
    public EmbeddedPostgres(EmbeddedPostgresOptions options, ILogger<EmbeddedPostgres> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.DataDirectory);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.Database);
        ArgumentOutOfRangeException.ThrowIfNegative(options.Port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.Port, IPEndPoint.MaxPort);

        _options = options;
        _logger = logger;
        _dataDirectory = Path.TrimEndingDirectorySeparator(
            Path.GetFullPath(options.DataDirectory, Environment.CurrentDirectory));
        _port = options.Port;
        _runAsServerUser = !OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess;
    }

    /// <summary>
    /// Npgsql connection string for the configured database (user <c>marketplace</c>, no password).
    /// Valid after <see cref="StartAsync"/> has completed.
    /// </summary>
    public string ConnectionString =>
        _connectionString ?? throw new InvalidOperationException("EmbeddedPostgres has not been started; call StartAsync first.");

    /// <summary>The port the server listens on (the configured port until <see cref="StartAsync"/> completes).</summary>
    public int Port => _port;

    /// <summary>Absolute path of the data directory.</summary>
    public string DataDirectory => _dataDirectory;

    /// <summary>
    /// <see langword="true"/> if <see cref="StartAsync"/> launched the server (so <see cref="StopAsync"/>
    /// stops it); <see langword="false"/> if an already running server was reused.
    /// </summary>
    public bool StartedByUs { get; private set; }

    /// <summary>
    /// Initialises the cluster if needed, starts the server (or reuses one already running on the
    /// data directory), waits until it accepts connections and creates the database if missing.
    /// </summary>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <exception cref="PostgresNotInstalledException">initdb/pg_ctl were not found.</exception>
    /// <exception cref="InvalidOperationException">A PostgreSQL command failed; the message holds its output.</exception>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_started)
            {
                return;
            }

            _binDirectory = ResolveBinDirectory();
            var parentDirectory = Path.GetDirectoryName(_dataDirectory)
                ?? throw new InvalidOperationException($"The PostgreSQL data directory '{_dataDirectory}' has no parent directory.");
            Directory.CreateDirectory(parentDirectory);

            using (await AcquireDirectoryLockAsync(parentDirectory, cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await StartCoreAsync(parentDirectory, cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    // Do not leave a half-started server (or a reserved port) behind.
                    if (StartedByUs)
                    {
                        await TryStopAfterFailedStartAsync().ConfigureAwait(false);
                    }

                    ReleaseReservedPort();
                    throw;
                }
            }

            _started = true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Stops the server with <c>pg_ctl stop -m fast</c> if this instance started it; otherwise does nothing.
    /// </summary>
    /// <param name="cancellationToken">Cancels waiting for the stop.</param>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await StopCoreAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Stops the server if this instance started it (see <see cref="StopAsync"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            LogStopFailed(ex, _dataDirectory);
        }
    }

    /// <summary>
    /// Finds the directory holding the PostgreSQL server binaries (<c>initdb</c> and <c>pg_ctl</c>):
    /// the <c>MARKETPLACE_PG_BIN</c> environment variable, then <c>pg_config --bindir</c>, then the
    /// highest version under <c>/usr/lib/postgresql/*/bin</c>, then <c>/usr/local/pgsql/bin</c>, then PATH.
    /// </summary>
    /// <returns>The directory, or <see langword="null"/> if none was found.</returns>
    public static string? FindBinDirectory() => Discover(searched: null);

    private async Task StartCoreAsync(string parentDirectory, CancellationToken cancellationToken)
    {
        var dataName = Path.GetFileName(_dataDirectory);
        PrepareDataDirectory(parentDirectory);
        if (_runAsServerUser)
        {
            await RunCheckedAsync("chown", ["-R", ServerOsUser + ":", _dataDirectory], false, _shortCommandTimeout, cancellationToken).ConfigureAwait(false);
        }

        var socketDirectory = await PrepareSocketDirectoryAsync(cancellationToken).ConfigureAwait(false);

        if (!File.Exists(Path.Combine(_dataDirectory, "PG_VERSION")))
        {
            LogInitializing(_dataDirectory);
            await RunCheckedAsync(
                BinPath("initdb"),
                ["-D", _dataDirectory, "-U", SuperUser, "--auth=trust", "-E", "UTF8", "--no-locale"],
                true,
                _initdbTimeout,
                cancellationToken).ConfigureAwait(false);
        }

        var runningPort = await FindRunningServerPortAsync(cancellationToken).ConfigureAwait(false);
        if (runningPort is int existingPort)
        {
            _port = existingPort;
            StartedByUs = false;
        }
        else
        {
            var logFile = await PrepareLogFileAsync(Path.Combine(parentDirectory, dataName + ".log"), cancellationToken).ConfigureAwait(false);
            await StartServerAsync(socketDirectory, logFile, cancellationToken).ConfigureAwait(false);
        }

        await WaitForConnectionAsync(cancellationToken).ConfigureAwait(false);
        await EnsureDatabaseAsync(cancellationToken).ConfigureAwait(false);

        _connectionString = new NpgsqlConnectionStringBuilder
        {
            Host = IPAddress.Loopback.ToString(),
            Port = _port,
            Database = _options.Database,
            Username = SuperUser,
            Pooling = true,
        }.ConnectionString;

        if (StartedByUs)
        {
            LogStarted(_port, _dataDirectory);
        }
        else
        {
            LogReused(_port, _dataDirectory);
        }
    }

    private async Task StartServerAsync(string socketDirectory, string logFile, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            var port = _options.Port != 0 ? _options.Port : ReservePort();
            var logOffset = FileLength(logFile);
            var serverOptions = string.Create(
                CultureInfo.InvariantCulture,
                $"-p {port} -k {socketDirectory} -c listen_addresses={IPAddress.Loopback} -c fsync=on -c max_connections=300");
            var result = await RunAsync(
                BinPath("pg_ctl"),
                ["start", "-D", _dataDirectory, "-w", "-t", "60", "-l", logFile, "-o", serverOptions],
                true,
                _startStopTimeout,
                cancellationToken).ConfigureAwait(false);

            if (result.ExitCode == 0)
            {
                _port = port;
                _serverPid = ReadPostmasterPid() ?? 0;
                StartedByUs = true;
                return;
            }

            ReleaseReservedPort();
            var serverLog = ReadLogTail(logFile, logOffset);
            var portTaken = serverLog.Contains("Address already in use", StringComparison.Ordinal);
            var staleSharedMemory = serverLog.Contains("pre-existing shared memory block", StringComparison.Ordinal);
            if (attempt < StartAttempts && ((portTaken && _options.Port == 0) || staleSharedMemory))
            {
                LogStartRetry(attempt, port);
                await Task.Delay(TimeSpan.FromSeconds(attempt), cancellationToken).ConfigureAwait(false);
                continue;
            }

            // pg_ctl -w can give up while the server is still coming up; make sure it is not left behind.
            if (await FindRunningServerPortAsync(cancellationToken).ConfigureAwait(false) is not null)
            {
                _serverPid = ReadPostmasterPid() ?? 0;
                StartedByUs = true;
            }

            throw new InvalidOperationException(
                $"Starting PostgreSQL failed: {result.Describe()}{Environment.NewLine}Server log ({logFile}):{Environment.NewLine}{serverLog}");
        }
    }

    private async Task StopCoreAsync(CancellationToken cancellationToken)
    {
        if (!StartedByUs)
        {
            _started = false;
            return;
        }

        if (_connectionString is not null)
        {
            using var connection = new NpgsqlConnection(_connectionString);
            NpgsqlConnection.ClearPool(connection);
        }

        // Our server may have died and another instance may have started a new one on this data
        // directory since: that one is not ours to stop.
        if (ReadPostmasterPid() is not { } currentPid || (_serverPid != 0 && currentPid != _serverPid))
        {
            LogAlreadyGone(_dataDirectory);
            MarkStopped();
            return;
        }

        var result = await RunAsync(
            BinPath("pg_ctl"),
            ["stop", "-D", _dataDirectory, "-m", "fast", "-w", "-t", "60"],
            true,
            _startStopTimeout,
            cancellationToken).ConfigureAwait(false);

        if (result.ExitCode != 0 && await FindRunningServerPortAsync(cancellationToken).ConfigureAwait(false) is not null)
        {
            throw new InvalidOperationException($"Stopping PostgreSQL failed: {result.Describe()}");
        }

        MarkStopped();
        LogStopped(_dataDirectory);
    }

    private void MarkStopped()
    {
        StartedByUs = false;
        _started = false;
        _serverPid = 0;
        ReleaseReservedPort();
    }

    private int? ReadPostmasterPid()
    {
        try
        {
            using var reader = new StreamReader(Path.Combine(_dataDirectory, "postmaster.pid"));
            return int.TryParse(reader.ReadLine()?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private async Task TryStopAfterFailedStartAsync()
    {
        try
        {
            await StopCoreAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            LogStopFailed(ex, _dataDirectory);
        }
    }

    private string ResolveBinDirectory()
    {
        if (_options.BinDirectory is { } configured)
        {
            var full = Path.GetFullPath(configured, Environment.CurrentDirectory);
            return HasServerBinaries(full) ? full : throw new PostgresNotInstalledException([full]);
        }

        var variable = Environment.GetEnvironmentVariable(BinDirectoryVariable);
        if (!string.IsNullOrWhiteSpace(variable) && !HasServerBinaries(variable))
        {
            LogBadBinVariable(BinDirectoryVariable, variable);
        }

        var searched = new List<string>();
        return Discover(searched) ?? throw new PostgresNotInstalledException(searched);
    }

    private static string? Discover(List<string>? searched)
    {
        bool Check(string? directory)
        {
            if (string.IsNullOrWhiteSpace(directory))
            {
                return false;
            }

            searched?.Add(directory);
            return HasServerBinaries(directory);
        }

        var variable = Environment.GetEnvironmentVariable(BinDirectoryVariable);
        if (string.IsNullOrWhiteSpace(variable))
        {
            searched?.Add(BinDirectoryVariable + " (unset)");
        }
        else if (Check(variable))
        {
            return Path.GetFullPath(variable);
        }

        var pgConfig = FindOnPath("pg_config");
        var pgConfigBin = pgConfig is null ? null : QueryPgConfigBinDirectory(pgConfig);
        if (pgConfigBin is null)
        {
            searched?.Add("pg_config --bindir (" + (pgConfig is null ? "no pg_config on PATH" : "failed") + ")");
        }
        else if (Check(pgConfigBin))
        {
            return pgConfigBin;
        }

        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var versioned = Directory.GetDirectories(debianRoot)
                .Select(directory => (Directory: directory, Version: ParseVersion(Path.GetFileName(directory))))
                .Where(entry => entry.Version is not null)
                .OrderByDescending(entry => entry.Version);
            foreach (var entry in versioned)
            {
                var bin = Path.Combine(entry.Directory, "bin");
                if (Check(bin))
                {
                    return bin;
                }
            }
        }
        else
        {
            searched?.Add(debianRoot + "/*/bin");
        }

        if (Check("/usr/local/pgsql/bin"))
        {
            return "/usr/local/pgsql/bin";
        }

        searched?.Add("PATH");
        foreach (var directory in PathDirectories())
        {
            if (HasServerBinaries(directory))
            {
                return directory;
            }
        }

        return null;
    }

    private static System.Version? ParseVersion(string name)
    {
        if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var major))
        {
            return new System.Version(major, 0);
        }

        return System.Version.TryParse(name, out var version) ? version : null;
    }

    private static string? QueryPgConfigBinDirectory(string pgConfig)
    {
        try
        {
            using var process = new Process
            {
                StartInfo = new ProcessStartInfo(pgConfig, ["--bindir"])
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                    CreateNoWindow = true,
                },
            };
            process.Start();
            var output = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(10)))
            {
                process.Kill(entireProcessTree: true);
                return null;
            }

            var bin = output.Wait(TimeSpan.FromSeconds(5)) ? output.Result.Trim() : string.Empty;
            return process.ExitCode == 0 && bin.Length > 0 ? bin : null;
        }
        catch (Win32Exception)
        {
            return null;
        }
    }

    private static bool HasServerBinaries(string directory) =>
        IsExecutableFile(Path.Combine(directory, ExecutableName("initdb")))
        && IsExecutableFile(Path.Combine(directory, ExecutableName("pg_ctl")));

    private static bool IsExecutableFile(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        if (OperatingSystem.IsWindows())
        {
            return true;
        }

        const UnixFileMode anyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        return (File.GetUnixFileMode(path) & anyExecute) != 0;
    }

    private static string ExecutableName(string name) => OperatingSystem.IsWindows() ? name + ".exe" : name;

    private static IEnumerable<string> PathDirectories() =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static string? FindOnPath(string name) =>
        PathDirectories()
            .Select(directory => Path.Combine(directory, ExecutableName(name)))
            .FirstOrDefault(IsExecutableFile);

    private string BinPath(string name) =>
        Path.Combine(_binDirectory ?? throw new InvalidOperationException("PostgreSQL binaries have not been located."), ExecutableName(name));

    private void PrepareDataDirectory(string parentDirectory)
    {
        if (!Directory.Exists(_dataDirectory))
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(_dataDirectory);
            }
            else
            {
                Directory.CreateDirectory(_dataDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }

        if (OperatingSystem.IsWindows() || !_runAsServerUser)
        {
            return;
        }

        // The postgres user must be able to reach the data directory (and the log file next to it).
        for (var directory = parentDirectory; !string.IsNullOrEmpty(directory); directory = Path.GetDirectoryName(directory))
        {
            var mode = File.GetUnixFileMode(directory);
            if ((mode & UnixFileMode.OtherExecute) == 0)
            {
                File.SetUnixFileMode(directory, mode | UnixFileMode.OtherExecute);
                LogMadeTraversable(directory);
            }
        }
    }

    private async Task<string> PrepareSocketDirectoryAsync(CancellationToken cancellationToken)
    {
        // Unix socket paths are limited to ~100 bytes, so keep the directory short and out of the data path.
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(_dataDirectory)))[..12];
        var root = Directory.Exists("/tmp") ? "/tmp" : Path.GetTempPath();
        var socketDirectory = Path.Combine(root, "mkpg-" + hash);
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(socketDirectory);
            return socketDirectory;
        }

        const UnixFileMode ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        Directory.CreateDirectory(socketDirectory, ownerOnly);
        if (_runAsServerUser)
        {
            await RunCheckedAsync("chown", [ServerOsUser + ":", socketDirectory], false, _shortCommandTimeout, cancellationToken).ConfigureAwait(false);
        }

        File.SetUnixFileMode(socketDirectory, ownerOnly);
        return socketDirectory;
    }

    private async Task<string> PrepareLogFileAsync(string preferred, CancellationToken cancellationToken)
    {
        // pg_ctl opens the log as the server user: make sure it can, else log inside the data directory.
        var fallback = Path.Combine(_dataDirectory, "embedded-postgres.log");
        try
        {
            using (new FileStream(preferred, FileMode.Append, FileAccess.Write, FileShare.ReadWrite))
            {
            }

            if (_runAsServerUser)
            {
                var chown = await RunAsync("chown", [ServerOsUser + ":", preferred], false, _shortCommandTimeout, cancellationToken).ConfigureAwait(false);
                if (chown.ExitCode != 0)
                {
                    return fallback;
                }
            }

            return preferred;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return fallback;
        }
    }

    private async Task<int?> FindRunningServerPortAsync(CancellationToken cancellationToken)
    {
        var status = await RunAsync(BinPath("pg_ctl"), ["status", "-D", _dataDirectory], true, _shortCommandTimeout, cancellationToken).ConfigureAwait(false);
        if (status.ExitCode != 0)
        {
            return null;
        }

        var pidFile = Path.Combine(_dataDirectory, "postmaster.pid");
        string[] lines;
        try
        {
            lines = await File.ReadAllLinesAsync(pidFile, cancellationToken).ConfigureAwait(false);
        }
        catch (FileNotFoundException)
        {
            return null;
        }

        if (lines.Length < 4
            || !int.TryParse(lines[0].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
            || !int.TryParse(lines[3].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
        {
            throw new InvalidOperationException($"PostgreSQL reports a server running on '{_dataDirectory}' but '{pidFile}' could not be parsed.");
        }

        if (!IsLivePostgresProcess(pid))
        {
            // A killed server that is still a zombie (not yet reaped), or its PID was reused by an
            // unrelated process: pg_ctl and postgres would both treat the lock file as live. Removing it
            // is safe because postgres still refuses to start while old processes hold its shared memory.
            LogStalePidFile(pid, pidFile);
            File.Delete(pidFile);
            return null;
        }

        return port;
    }

    private static bool IsLivePostgresProcess(int pid)
    {
        if (!OperatingSystem.IsLinux())
        {
            return true;
        }

        try
        {
            // "/proc/<pid>/stat" is "<pid> (<comm>) <state> ..."; the name may itself contain parentheses.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var open = stat.IndexOf('(', StringComparison.Ordinal);
            var close = stat.LastIndexOf(')');
            if (open < 0 || close < open || close + 2 >= stat.Length)
            {
                return true;
            }

            var name = stat[(open + 1)..close];
            var state = stat[close + 2];
            return state is not ('Z' or 'X' or 'x')
                && (name.StartsWith("postgres", StringComparison.Ordinal) || name.StartsWith("postmaster", StringComparison.Ordinal));
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            return false;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    private async Task WaitForConnectionAsync(CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await using var connection = new NpgsqlConnection(AdminConnectionString());
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (NpgsqlException ex) when (IsTransient(ex) && deadline.Elapsed < _connectTimeout)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250), cancellationToken).ConfigureAwait(false);
            }
            catch (NpgsqlException ex)
            {
                throw new InvalidOperationException(
                    $"PostgreSQL on 127.0.0.1:{_port} (data in {_dataDirectory}) did not accept connections: {ex.Message}", ex);
            }
        }
    }

    private static bool IsTransient(NpgsqlException exception) =>
        exception is PostgresException postgres ? postgres.SqlState == PostgresErrorCodes.CannotConnectNow || postgres.IsTransient : exception.IsTransient;

    private async Task EnsureDatabaseAsync(CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(AdminConnectionString());
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);

        await using (var exists = new NpgsqlCommand("SELECT 1 FROM pg_database WHERE datname = @name", connection))
        {
            exists.Parameters.AddWithValue("name", _options.Database);
            if (await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is not null)
            {
                return;
            }
        }

        var quoted = "\"" + _options.Database.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
        await using var create = new NpgsqlCommand("CREATE DATABASE " + quoted, connection);
        try
        {
            await create.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            LogDatabaseCreated(_options.Database);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.DuplicateDatabase or PostgresErrorCodes.UniqueViolation)
        {
            // Created concurrently by someone else: fine.
        }
    }

    private string AdminConnectionString() =>
        new NpgsqlConnectionStringBuilder
        {
            Host = IPAddress.Loopback.ToString(),
            Port = _port,
            Database = "postgres",
            Username = SuperUser,
            Pooling = false,
            Timeout = 5,
        }.ConnectionString;

    private async Task<IDisposable> AcquireDirectoryLockAsync(string parentDirectory, CancellationToken cancellationToken)
    {
        // Serialises initdb/start between instances (and processes) sharing this data directory.
        var path = Path.Combine(parentDirectory, Path.GetFileName(_dataDirectory) + ".lock");
        var waited = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                // FileShare.None takes an exclusive advisory lock, also between processes.
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (UnauthorizedAccessException)
            {
                return NoLock.Instance;
            }
            catch (IOException) when (waited.Elapsed < _lockTimeout)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                throw new InvalidOperationException($"Timed out waiting for the lock '{path}' held by another PostgreSQL start on this data directory.", ex);
            }
        }
    }

    private int ReservePort()
    {
        lock (_portLock)
        {
            for (var attempt = 0; attempt < 50; attempt++)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                listener.Stop();
                if (_reservedPorts.Add(port))
                {
                    _reservedPort = port;
                    return port;
                }
            }
        }

        throw new InvalidOperationException("Could not find a free TCP port on 127.0.0.1 for PostgreSQL.");
    }

    private void ReleaseReservedPort()
    {
        if (_reservedPort == 0)
        {
            return;
        }

        lock (_portLock)
        {
            _reservedPorts.Remove(_reservedPort);
        }

        _reservedPort = 0;
    }

    private static long FileLength(string path)
    {
        try
        {
            var file = new FileInfo(path);
            return file.Exists ? file.Length : 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    private static string ReadLogTail(string path, long offset)
    {
        const int maxChars = 4000;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Seek(Math.Max(offset, stream.Length - maxChars), SeekOrigin.Begin);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            var text = reader.ReadToEnd().Trim();
            return text.Length > 0 ? text : "(empty)";
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"(could not read: {ex.Message})";
        }
    }

    private async Task RunCheckedAsync(string fileName, IReadOnlyList<string> arguments, bool asServerUser, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var result = await RunAsync(fileName, arguments, asServerUser, timeout, cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"PostgreSQL setup command failed: {result.Describe()}");
        }
    }

    private async Task<CommandResult> RunAsync(string fileName, IReadOnlyList<string> arguments, bool asServerUser, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var startInfo = new ProcessStartInfo
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            CreateNoWindow = true,
        };

        if (asServerUser && _runAsServerUser)
        {
            // PostgreSQL refuses to run as root.
            startInfo.FileName = FindRunuser();
            startInfo.WorkingDirectory = "/";
            foreach (var argument in (string[])["-u", ServerOsUser, "--", fileName])
            {
                startInfo.ArgumentList.Add(argument);
            }
        }
        else
        {
            startInfo.FileName = fileName;
        }

        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        // Keep the caller's libpq settings (PGPORT, PGOPTIONS, ...) away from the server tools.
        foreach (var name in startInfo.Environment.Keys.Where(key => key.StartsWith("PG", StringComparison.Ordinal)).ToList())
        {
            startInfo.Environment.Remove(name);
        }

        var commandLine = string.Join(' ', new[] { startInfo.FileName }.Concat(startInfo.ArgumentList).Select(QuoteForDisplay));
        LogRunning(commandLine);

        using var process = new Process { StartInfo = startInfo };
        try
        {
            process.Start();
        }
        catch (Win32Exception ex)
        {
            throw new InvalidOperationException($"Could not run `{commandLine}`: {ex.Message}", ex);
        }

        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(timeoutSource.Token).ConfigureAwait(false);
            await Task.WhenAll(stdout, stderr).WaitAsync(timeoutSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Already exited.
            }

            cancellationToken.ThrowIfCancellationRequested();
            throw new InvalidOperationException($"`{commandLine}` did not finish within {timeout.TotalSeconds:0} s.");
        }

        return new CommandResult(commandLine, process.ExitCode, stdout.Result, stderr.Result);
    }

    private static string FindRunuser() =>
        new[] { "/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser" }.FirstOrDefault(File.Exists)
            ?? FindOnPath("runuser")
            ?? "runuser";

    private static string QuoteForDisplay(string argument) =>
        argument.Length > 0 && !argument.Any(c => char.IsWhiteSpace(c) || c is '"' or '\'')
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL started on 127.0.0.1:{Port}, data in {DataDirectory}")]
    private partial void LogStarted(int port, string dataDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL already running on 127.0.0.1:{Port}, data in {DataDirectory}; reusing it (it will not be stopped by us)")]
    private partial void LogReused(int port, string dataDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Initializing a new PostgreSQL cluster in {DataDirectory}")]
    private partial void LogInitializing(string dataDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Created database {Database}")]
    private partial void LogDatabaseCreated(string database);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL stopped, data in {DataDirectory}")]
    private partial void LogStopped(string dataDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Embedded PostgreSQL (data in {DataDirectory}) was no longer running; nothing to stop")]
    private partial void LogAlreadyGone(string dataDirectory);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping embedded PostgreSQL (data in {DataDirectory}) failed")]
    private partial void LogStopFailed(Exception exception, string dataDirectory);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Starting PostgreSQL on port {Port} failed (attempt {Attempt}); retrying")]
    private partial void LogStartRetry(int attempt, int port);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing stale {PidFile}: process {Pid} is not a running PostgreSQL server")]
    private partial void LogStalePidFile(int pid, string pidFile);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Variable}={Value} does not contain initdb and pg_ctl; ignoring it")]
    private partial void LogBadBinVariable(string variable, string value);

    [LoggerMessage(Level = LogLevel.Information, Message = "Added o+x to {Directory} so the postgres user can reach the data directory")]
    private partial void LogMadeTraversable(string directory);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Running {CommandLine}")]
    private partial void LogRunning(string commandLine);

    private sealed record CommandResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError)
    {
        public string Describe()
        {
            var output = string.Join(Environment.NewLine, new[] { StandardOutput.Trim(), StandardError.Trim() }.Where(text => text.Length > 0));
            return $"`{CommandLine}` exited with code {ExitCode}{Environment.NewLine}{(output.Length > 0 ? output : "(no output)")}";
        }
    }

    private sealed class NoLock : IDisposable
    {
        public static readonly NoLock Instance = new();

        public void Dispose()
        {
        }
    }
}

/// <summary>
/// Thrown when the PostgreSQL server binaries (<c>initdb</c>, <c>pg_ctl</c>) cannot be found.
/// </summary>
public sealed class PostgresNotInstalledException : Exception
{
    /// <summary>Creates the exception with the standard message and no search locations.</summary>
    public PostgresNotInstalledException()
        : this([])
    {
    }

    /// <summary>Creates the exception with a custom message.</summary>
    /// <param name="message">The message.</param>
    public PostgresNotInstalledException(string message)
        : base(message)
    {
        SearchedLocations = [];
    }

    /// <summary>Creates the exception with a custom message and inner exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public PostgresNotInstalledException(string message, Exception innerException)
        : base(message, innerException)
    {
        SearchedLocations = [];
    }

    /// <summary>Creates the exception listing where the binaries were looked for.</summary>
    /// <param name="searchedLocations">Directories (or sources such as PATH) that were searched.</param>
    public PostgresNotInstalledException(IReadOnlyList<string> searchedLocations)
        : base(BuildMessage(searchedLocations))
    {
        SearchedLocations = searchedLocations;
    }

    /// <summary>Where the binaries were looked for.</summary>
    public IReadOnlyList<string> SearchedLocations { get; }

    private static string BuildMessage(IReadOnlyList<string> searchedLocations)
    {
        var where = searchedLocations.Count > 0 ? string.Join(", ", searchedLocations) : "nowhere";
        return "PostgreSQL server binaries (initdb, pg_ctl) were not found (looked in: " + where + "); "
            + "install them with \"sudo apt-get install -y postgresql\" (Debian/Ubuntu), "
            + "or set ConnectionStrings:Marketplace to use an existing server, "
            + "or set MARKETPLACE_PG_BIN to the directory holding initdb and pg_ctl.";
    }
}
