using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Npgsql;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// Paced HTTP load on one front door, every call with its own <c>X-Track-Id</c>, on one data service or spread over
/// several targets (key and service) in turn: a few loops, each calling at a fixed rate and waiting for its answer
/// before its next call, or independent callers (each call sent on schedule whatever the earlier ones are doing, as a
/// gateway's many clients do). For every call it keeps the TrackId, when the answer arrived (on the caller's clock), its
/// status and what it says it charged, so a test can ask the call log and the accounts afterwards which answered calls
/// they hold.
/// </summary>
internal sealed class CallLoad : IDisposable
{
    private readonly HttpClient _client;
    private readonly CallTarget[] _targets;
    private readonly int _loops;
    private readonly TimeSpan _period;
    private readonly string _runId = Guid.NewGuid().ToString("N")[..12];
    private readonly Stopwatch _clock;
    private readonly ConcurrentQueue<CallAttempt> _calls = new();
    private readonly bool _independent;
    private readonly ConcurrentDictionary<Task, byte> _inFlight = new();
    private readonly SemaphoreSlim? _inFlightSlots;
    private Task[] _running = [];
    private int _stopping;
    private long _sent;

    /// <param name="baseAddress">The front door.</param>
    /// <param name="apiKey">The consumer's key.</param>
    /// <param name="callPath">Path and query of the call, e.g. <c>/v1/call/svc-1/verify?number=...</c>.</param>
    /// <param name="loops">Concurrent callers.</param>
    /// <param name="callsPerSecond">Total target rate; a loop whose calls take longer than its share simply calls back to back.</param>
    /// <param name="clock">The clock answers are timed on (shared with the test, which times the fault on it).</param>
    public CallLoad(Uri baseAddress, string apiKey, string callPath, int loops, double callsPerSecond, Stopwatch clock)
        : this(baseAddress, [new CallTarget(apiKey, callPath)], loops, callsPerSecond, clock)
    {
    }

    /// <param name="baseAddress">The front door.</param>
    /// <param name="targets">What to call: each call takes the next target in turn, so they share the load evenly.</param>
    /// <param name="loops">Concurrent callers; with <paramref name="independentCallers"/>, the most calls in flight at once.</param>
    /// <param name="callsPerSecond">Total target rate; a loop whose calls take longer than its share simply calls back to back.</param>
    /// <param name="clock">The clock answers are timed on (shared with the test, which times the fault on it).</param>
    /// <param name="timeout">How long a call may wait for its answer before the caller gives up (10 s when null).</param>
    /// <param name="independentCallers">
    /// Send each call at its time whatever earlier calls are doing, so a call that hangs holds up nobody else (until
    /// <paramref name="loops"/> calls are in flight); otherwise <paramref name="loops"/> loops each wait for their answer.
    /// </param>
    public CallLoad(Uri baseAddress, IReadOnlyList<CallTarget> targets, int loops, double callsPerSecond, Stopwatch clock, TimeSpan? timeout = null,
        bool independentCallers = false)
    {
        ArgumentOutOfRangeException.ThrowIfZero(targets.Count);
        _client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = loops, PooledConnectionLifetime = Timeout.InfiniteTimeSpan })
        {
            BaseAddress = baseAddress,
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
        };
        FrontDoor = baseAddress;
        _targets = [.. targets];
        _loops = loops;
        _independent = independentCallers;
        _inFlightSlots = independentCallers ? new SemaphoreSlim(loops) : null;
        _period = TimeSpan.FromSeconds((independentCallers ? 1 : loops) / callsPerSecond);
        _clock = clock;
    }

    /// <summary>The front door the calls go to.</summary>
    public Uri FrontDoor { get; }

    /// <summary>When <see cref="Start"/> was called, on the clock.</summary>
    public TimeSpan StartedAt { get; private set; }

    /// <summary>Starts the loops.</summary>
    public void Start()
    {
        StartedAt = _clock.Elapsed;
        _running = _independent
            ? [Task.Run(ScheduleAsync)]
            : [.. Enumerable.Range(0, _loops).Select(loop => Task.Run(() => LoopAsync(loop)))];
    }

    /// <summary>
    /// Tells the loops to send no further call. Calls in flight still finish (or fail, when the host was killed: those
    /// are kept as unanswered).
    /// </summary>
    public void Stop() => Volatile.Write(ref _stopping, 1);

    /// <summary>Stops the loops and returns every call they made, in no particular order.</summary>
    public async Task<IReadOnlyList<CallAttempt>> StopAsync()
    {
        Stop();
        await Task.WhenAll(_running);
        await Task.WhenAll(_inFlight.Keys);
        return Finished();
    }

    /// <summary>The calls finished (answered or failed) so far, in no particular order.</summary>
    public IReadOnlyList<CallAttempt> Finished() => [.. _calls];

    /// <summary>Stops sending (a test that failed before <see cref="StopAsync"/> leaves no caller running) and closes the connections.</summary>
    public void Dispose()
    {
        // (The semaphore has no wait handle to free, and calls still finishing after a failed test release it.)
        Stop();
        _client.Dispose();
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? string.Join(",", values) : null;

    private static string Shorten(string text) => text.Length <= 300 ? text : text[..300];

    private bool Stopping => Volatile.Read(ref _stopping) == 1;

    private async Task LoopAsync(int loop)
    {
        var next = _clock.Elapsed + (_period * loop / _loops);
        for (var n = 0; !Stopping; n++)
        {
            var wait = next - _clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
                if (Stopping)
                {
                    break;
                }
            }

            // Behind schedule (a slow answer, a starved thread): carry on from now rather than burst to catch up.
            next = TimeSpan.FromTicks(Math.Max(next.Ticks, _clock.Elapsed.Ticks - _period.Ticks)) + _period;

            await CallAsync(string.Create(CultureInfo.InvariantCulture, $"fault-{_runId}-{loop:D2}-{n:D6}"));
        }
    }

    // One pacer; every call its own task, at most `_loops` in flight.
    private async Task ScheduleAsync()
    {
        var next = _clock.Elapsed;
        for (var n = 0; !Stopping; n++)
        {
            var wait = next - _clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
            }

            await _inFlightSlots!.WaitAsync();
            if (Stopping)
            {
                _inFlightSlots.Release();
                break;
            }

            next = TimeSpan.FromTicks(Math.Max(next.Ticks, _clock.Elapsed.Ticks - _period.Ticks)) + _period;
            var call = CallAsync(string.Create(CultureInfo.InvariantCulture, $"fault-{_runId}-i-{n:D6}"));
            _inFlight.TryAdd(call, 0);
            _ = call.ContinueWith(done =>
            {
                _inFlight.TryRemove(done, out _);
                _inFlightSlots.Release();
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private async Task CallAsync(string trackId)
    {
        var target = _targets[(int)((Interlocked.Increment(ref _sent) - 1) % _targets.Length)];
        var sentAt = _clock.Elapsed;
        using var request = new HttpRequestMessage(HttpMethod.Get, target.CallPath);
        request.Headers.Add("X-Track-Id", trackId);
        request.Headers.Add("X-Api-Key", target.ApiKey);
        try
        {
            using var response = await _client.SendAsync(request);
            await response.Content.LoadIntoBufferAsync();
            var answeredAt = _clock.Elapsed;
            var ok = response.StatusCode == HttpStatusCode.OK;
            _calls.Enqueue(new CallAttempt(trackId, sentAt, answeredAt, response.StatusCode, null)
            {
                Target = target,
                FrontDoor = FrontDoor,
                EndedAt = answeredAt,
                Charged = Header(response, "X-Charged") is { } charged ? long.Parse(charged, CultureInfo.InvariantCulture) : null,
                EchoedTrackId = Header(response, "X-Track-Id"),
                RetryAfter = response.Headers.RetryAfter?.ToString(),
                Problem = ok ? null : Shorten(await response.Content.ReadAsStringAsync()),
            });
        }
        catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException or IOException)
        {
            // No answer: when the host was killed the call may or may not have been recorded; otherwise it is a finding.
            _calls.Enqueue(new CallAttempt(trackId, sentAt, null, null, $"{exception.GetType().Name}: {exception.Message}")
            {
                Target = target,
                FrontDoor = FrontDoor,
                EndedAt = _clock.Elapsed,
            });
        }
    }
}

/// <summary>What one call of a <see cref="CallLoad"/> calls, and with which key.</summary>
/// <param name="ApiKey">The consumer's key, sent as X-Api-Key.</param>
/// <param name="CallPath">Path and query, e.g. <c>/v1/call/svc-1/verify?number=...</c>.</param>
/// <param name="ServiceId">The data service the path calls (for the test's bookkeeping).</param>
/// <param name="KeyId">The key's id (for the test's bookkeeping).</param>
internal sealed record CallTarget(string ApiKey, string CallPath, string ServiceId = "", string KeyId = "");

/// <summary>One call of a <see cref="CallLoad"/>.</summary>
/// <param name="TrackId">The X-Track-Id it was sent with.</param>
/// <param name="SentAt">When it was sent.</param>
/// <param name="AnsweredAt">When its answer arrived; null when none did.</param>
/// <param name="Status">The answer's status; null when none arrived.</param>
/// <param name="Error">Why no answer arrived.</param>
internal sealed record CallAttempt(string TrackId, TimeSpan SentAt, TimeSpan? AnsweredAt, HttpStatusCode? Status, string? Error)
{
    public bool AnsweredOk => Status == HttpStatusCode.OK;

    /// <summary>What was called.</summary>
    public CallTarget? Target { get; init; }

    /// <summary>The front door it was sent to.</summary>
    public Uri? FrontDoor { get; init; }

    /// <summary>When the answer arrived, or the caller gave up or saw the connection fail.</summary>
    public TimeSpan EndedAt { get; init; }

    /// <summary>How long the caller waited, answered or not.</summary>
    public TimeSpan Waited => EndedAt - SentAt;

    /// <summary>The answer's X-Charged header; null when it had none.</summary>
    public long? Charged { get; init; }

    /// <summary>The answer's X-Track-Id header.</summary>
    public string? EchoedTrackId { get; init; }

    /// <summary>The answer's Retry-After header.</summary>
    public string? RetryAfter { get; init; }

    /// <summary>The start of a body that was not a 200's (a problem+json), for diagnostics.</summary>
    public string? Problem { get; init; }
}

/// <summary>One call-log row as the fault tests read it.</summary>
internal sealed record CallLogFaultRow(string TrackId, string Outcome, string? Rejection, int Status, long Charged);

/// <summary>Reads the call log table directly (the admin lookup answers one TrackId at a time).</summary>
internal static class CallLogRows
{
    /// <summary>Every row of <paramref name="trackIds"/> (a TrackId with two rows appears twice).</summary>
    public static async Task<List<CallLogFaultRow>> ReadAsync(string connectionString, IEnumerable<string> trackIds)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT track_id, outcome, rejection, status, charged FROM marketplace_call_log WHERE track_id = ANY(@ids)", connection);
        command.Parameters.AddWithValue("ids", trackIds.ToArray());
        var rows = new List<CallLogFaultRow>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(new CallLogFaultRow(reader.GetString(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2).TrimEnd(),
                reader.GetInt16(3), reader.GetInt64(4)));
        }

        return rows;
    }

    /// <summary>How many rows each of <paramref name="trackIds"/> has; TrackIds without a row are absent.</summary>
    public static async Task<Dictionary<string, long>> CountAsync(string connectionString, IEnumerable<string> trackIds)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT track_id, count(*) FROM marketplace_call_log WHERE track_id = ANY(@ids) GROUP BY track_id", connection);
        command.Parameters.AddWithValue("ids", trackIds.ToArray());
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            counts[reader.GetString(0)] = reader.GetInt64(1);
        }

        return counts;
    }

    /// <summary>TrackIds with more than one row in the whole table (the test's database holds only its own calls).</summary>
    public static async Task<List<string>> DuplicatesAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT track_id || ' x' || count(*) FROM marketplace_call_log GROUP BY track_id HAVING count(*) > 1 ORDER BY track_id LIMIT 20", connection);
        var duplicates = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            duplicates.Add(reader.GetString(0));
        }

        return duplicates;
    }

    /// <summary>Rows in the table.</summary>
    public static async Task<long> TotalAsync(NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand("SELECT count(*) FROM marketplace_call_log", connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
