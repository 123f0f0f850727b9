using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Npgsql;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// Paced HTTP load on one data service: a few loops, each calling at a fixed rate, every call with its own
/// <c>X-Track-Id</c>. For every call it keeps the TrackId, when the answer arrived (on the caller's clock) and its status,
/// so a test can ask the call log afterwards which answered calls it holds.
/// </summary>
internal sealed class CallLoad : IDisposable
{
    private readonly HttpClient _client;
    private readonly string _callPath;
    private readonly int _loops;
    private readonly TimeSpan _period;
    private readonly string _runId = Guid.NewGuid().ToString("N")[..12];
    private readonly Stopwatch _clock;
    private readonly ConcurrentQueue<CallAttempt> _calls = new();
    private Task[] _running = [];
    private int _stopping;

    /// <param name="baseAddress">The front door.</param>
    /// <param name="apiKey">The consumer's key.</param>
    /// <param name="callPath">Path and query of the call, e.g. <c>/v1/call/svc-1/verify?number=...</c>.</param>
    /// <param name="loops">Concurrent callers.</param>
    /// <param name="callsPerSecond">Total target rate; a loop whose calls take longer than its share simply calls back to back.</param>
    /// <param name="clock">The clock answers are timed on (shared with the test, which times the fault on it).</param>
    public CallLoad(Uri baseAddress, string apiKey, string callPath, int loops, double callsPerSecond, Stopwatch clock)
    {
        _client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = loops, PooledConnectionLifetime = Timeout.InfiniteTimeSpan })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromSeconds(10),
        };
        _client.DefaultRequestHeaders.Add("X-Api-Key", apiKey);
        _callPath = callPath;
        _loops = loops;
        _period = TimeSpan.FromSeconds(loops / callsPerSecond);
        _clock = clock;
    }

    /// <summary>When <see cref="Start"/> was called, on the clock.</summary>
    public TimeSpan StartedAt { get; private set; }

    /// <summary>Starts the loops.</summary>
    public void Start()
    {
        StartedAt = _clock.Elapsed;
        _running = [.. Enumerable.Range(0, _loops).Select(loop => Task.Run(() => LoopAsync(loop)))];
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
        return Finished();
    }

    /// <summary>The calls finished (answered or failed) so far, in no particular order.</summary>
    public IReadOnlyList<CallAttempt> Finished() => [.. _calls];

    public void Dispose() => _client.Dispose();

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

            var trackId = string.Create(CultureInfo.InvariantCulture, $"fault-{_runId}-{loop:D2}-{n:D6}");
            var sentAt = _clock.Elapsed;
            using var request = new HttpRequestMessage(HttpMethod.Get, _callPath);
            request.Headers.Add("X-Track-Id", trackId);
            try
            {
                using var response = await _client.SendAsync(request);
                await response.Content.LoadIntoBufferAsync();
                _calls.Enqueue(new CallAttempt(trackId, sentAt, _clock.Elapsed, response.StatusCode, null));
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException or IOException)
            {
                // No answer: when the host was killed the call may or may not have been recorded; otherwise it is a finding.
                _calls.Enqueue(new CallAttempt(trackId, sentAt, null, null, $"{exception.GetType().Name}: {exception.Message}"));
            }
        }
    }
}

/// <summary>One call of a <see cref="CallLoad"/>.</summary>
/// <param name="TrackId">The X-Track-Id it was sent with.</param>
/// <param name="SentAt">When it was sent.</param>
/// <param name="AnsweredAt">When its answer arrived; null when none did.</param>
/// <param name="Status">The answer's status; null when none arrived.</param>
/// <param name="Error">Why no answer arrived.</param>
internal sealed record CallAttempt(string TrackId, TimeSpan SentAt, TimeSpan? AnsweredAt, HttpStatusCode? Status, string? Error)
{
    public bool AnsweredOk => Status == HttpStatusCode.OK;
}

/// <summary>Reads the call log table directly (the admin lookup answers one TrackId at a time).</summary>
internal static class CallLogRows
{
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
