using System.Net.Http.Headers;
using System.Text.Json;

namespace Marketplace.Silo.Hosting;

/// <summary>
/// <c>Marketplace.Silo reconcile</c>: the operator's command for <c>GET /admin/reconciliation</c> on a running front door.
/// It prints every account that differs from the journal (calls, charges, balance against credits minus the journal's
/// charges, each key's counters and quota windows, the rollups) and exits 0 when nothing differs, 1 when something does,
/// 2 when it could not ask. The admin key comes from <c>MARKETPLACE_ADMIN_KEY</c> or <c>--admin-key-file</c>, never from
/// the command line (which other users of the machine can read).
/// </summary>
public static class ReconcileCommand
{
    /// <summary>The verb that selects this command.</summary>
    public const string Verb = "reconcile";

    private const string Usage =
        "usage: Marketplace.Silo reconcile [--url http://127.0.0.1:5000] [--admin-key-file PATH] [--wait SECONDS] [--json]\n" +
        "  The admin key is read from MARKETPLACE_ADMIN_KEY unless --admin-key-file names a file holding it.\n" +
        "  --wait repeats the check (every second) until nothing differs or the seconds pass: settlements still on their way\n" +
        "  right after load show up as differences until they arrive.";

    /// <summary>Runs the command; returns the process's exit code.</summary>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output, TextWriter error, HttpMessageHandler? handler = null)
    {
        var url = Environment.GetEnvironmentVariable("MARKETPLACE_URL") ?? "http://127.0.0.1:5000";
        var adminKey = Environment.GetEnvironmentVariable("MARKETPLACE_ADMIN_KEY");
        var wait = TimeSpan.Zero;
        var json = false;
        for (var i = 0; i < args.Count; i++)
        {
            string? Value() => i + 1 < args.Count ? args[++i] : null;
            switch (args[i])
            {
                case "--url" when Value() is { } value && Uri.TryCreate(value, UriKind.Absolute, out _):
                    url = value;
                    break;
                case "--admin-key-file" when Value() is { } path:
                    if (!File.Exists(path))
                    {
                        await error.WriteLineAsync($"reconcile: the admin key file '{path}' does not exist.");
                        return 2;
                    }

                    adminKey = (await File.ReadAllTextAsync(path)).Trim();
                    break;
                case "--wait" when int.TryParse(Value(), out var seconds) && seconds is >= 0 and <= 3600:
                    wait = TimeSpan.FromSeconds(seconds);
                    break;
                case "--json":
                    json = true;
                    break;
                default:
                    await error.WriteLineAsync(Usage);
                    return 2;
            }
        }

        if (string.IsNullOrWhiteSpace(adminKey))
        {
            await error.WriteLineAsync("reconcile: no admin key: set MARKETPLACE_ADMIN_KEY or pass --admin-key-file.");
            return 2;
        }

        using var client = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        client.BaseAddress = new Uri(url);
        client.Timeout = TimeSpan.FromMinutes(5);
        client.DefaultRequestHeaders.Add("X-Admin-Key", adminKey);
        client.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        var deadline = DateTimeOffset.UtcNow + wait;
        while (true)
        {
            JsonElement report;
            try
            {
                using var response = await client.GetAsync("/admin/reconciliation");
                var body = await response.Content.ReadAsStringAsync();
                if (!response.IsSuccessStatusCode)
                {
                    await error.WriteLineAsync($"reconcile: {url} answered {(int)response.StatusCode}: {body}");
                    return 2;
                }

                report = JsonDocument.Parse(body).RootElement.Clone();
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException or JsonException)
            {
                await error.WriteLineAsync($"reconcile: cannot ask {url}: {exception.Message}");
                return 2;
            }

            var consistent = report.GetProperty("consistent").GetBoolean();
            if (!consistent && DateTimeOffset.UtcNow < deadline)
            {
                // Settlements in flight arrive within moments; the wait is the operator's bound, not a timing assumption.
                await Task.Delay(TimeSpan.FromSeconds(1));
                continue;
            }

            if (json)
            {
                await output.WriteLineAsync(report.GetRawText());
            }
            else
            {
                await WriteReportAsync(report, output);
            }

            return consistent ? 0 : 1;
        }
    }

    private static async Task WriteReportAsync(JsonElement report, TextWriter output)
    {
        var accounts = report.GetProperty("accounts").GetInt32();
        var pending = report.GetProperty("pendingOnThisNode").GetInt32();
        if (report.GetProperty("consistent").GetBoolean())
        {
            await output.WriteLineAsync($"{accounts} accounts reconciled with the journal: no difference.");
            return;
        }

        await output.WriteLineAsync(
            $"{report.GetProperty("inconsistent").GetInt32()} of {accounts} accounts differ from the journal ({pending} call records not yet stored by the node asked):");
        foreach (var account in report.GetProperty("differences").EnumerateArray())
        {
            await output.WriteLineAsync($"account {account.GetProperty("accountId").GetString()}");
            await LineAsync(output, "calls", account, "logCalls", "grainCalls");
            await LineAsync(output, "charged", account, "logCharged", "grainCharged");
            await LineAsync(output, "balance", account, "expectedBalance", "balance", "credits minus the journal's charges");
            await LineAsync(output, "calls", account, "logCalls", "rollupCalls", against: "rollups");
            await LineAsync(output, "charged", account, "logCharged", "rollupCharged", against: "rollups");
            foreach (var key in account.GetProperty("keys").EnumerateArray().Where(k => !k.GetProperty("consistent").GetBoolean()))
            {
                var keyId = key.GetProperty("keyId").GetString();
                await LineAsync(output, $"key {keyId} calls", key, "logCalls", "grainCalls");
                await LineAsync(output, $"key {keyId} charged calls", key, "logChargedCalls", "grainChargedCalls");
                await LineAsync(output, $"key {keyId} failed", key, "logFailed", "grainFailed");
                if (key.TryGetProperty("windows", out var windows) && windows.ValueKind == JsonValueKind.Array)
                {
                    foreach (var window in windows.EnumerateArray())
                    {
                        var service = window.GetProperty("serviceId").GetString() is { } id ? $" of {id}" : string.Empty;
                        await LineAsync(output, $"key {keyId} {window.GetProperty("window").GetString()} quota{service}", window, "logCalls", "grainCalls");
                    }
                }
            }
        }
    }

    // One compared figure, written only when the journal and the grains disagree on it.
    private static async Task LineAsync(
        TextWriter output, string what, JsonElement element, string journal, string other, string? journalMeaning = null, string against = "grains")
    {
        var (expected, actual) = (element.GetProperty(journal).GetInt64(), element.GetProperty(other).GetInt64());
        if (expected != actual)
        {
            await output.WriteLineAsync(
                $"  {what}: journal {expected}{(journalMeaning is null ? string.Empty : $" ({journalMeaning})")}, {against} {actual}, difference {expected - actual}");
        }
    }
}
