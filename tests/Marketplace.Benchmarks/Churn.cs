using System.Diagnostics;
using System.Net.Http.Json;

namespace Marketplace.Benchmarks;

/// <summary>
/// Release churn for the HTTP benchmark: <c>churn setup</c> creates a catalog of services with two versions each (and
/// gives the measured service a second version); <c>churn run</c> then changes the weights of some of them, the
/// measured one included, in a loop until it is stopped, so the benchmark can compare calls with and without churn.
/// </summary>
public static class Churn
{
    /// <summary><c>churn setup|run &lt;marketplace-url&gt; &lt;admin-key&gt; &lt;provider-url&gt; [services] [changing] [changes-per-second]</c></summary>
    public static async Task RunAsync(string[] args)
    {
        if (args.Length < 5 || args[1] is not ("setup" or "run"))
        {
            Console.Error.WriteLine("usage: churn setup|run <marketplace-url> <admin-key> <provider-url> [services=500] [changing=50] [changes-per-second=50]");
            Environment.Exit(2);
        }

        var services = args.Length > 5 ? int.Parse(args[5], System.Globalization.CultureInfo.InvariantCulture) : 500;
        var changing = args.Length > 6 ? int.Parse(args[6], System.Globalization.CultureInfo.InvariantCulture) : 50;
        var perSecond = args.Length > 7 ? double.Parse(args[7], System.Globalization.CultureInfo.InvariantCulture) : 50;
        using var admin = new HttpClient { BaseAddress = new Uri(args[2]) };
        admin.DefaultRequestHeaders.Add("X-Admin-Key", args[3]);
        var provider = args[4].TrimEnd('/');

        if (args[1] == "setup")
        {
            await SetUpAsync(admin, provider, services);
            return;
        }

        await ChangeWeightsAsync(admin, changing, perSecond);
    }

    private static async Task SetUpAsync(HttpClient admin, string provider, int services)
    {
        var watch = Stopwatch.StartNew();
        await Send(admin.PostAsJsonAsync("/admin/providers", new { id = "churn-provider", name = "Churn provider" }));
        await Parallel.ForEachAsync(Enumerable.Range(0, services), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, _) =>
        {
            var id = ServiceId(i);
            await Send(admin.PostAsJsonAsync("/admin/services", new
            {
                id, name = $"Churn service {i}", providerId = "churn-provider", upstreamBaseUrl = provider + "/ip", pricePerCall = 1,
                currency = "EUR", category = "churn", status = "published",
            }));
            await Send(admin.PutAsJsonAsync($"/admin/services/{id}/versions/v2", new { baseUrl = provider + "/ip", timeoutMs = 5000 }));
        });

        // The measured service gets a second version on the same upstream, so its weights can change under load.
        var ipGeo = await admin.GetFromJsonAsync<System.Text.Json.JsonElement>("/admin/services/ip-geo");
        var v1 = ipGeo.GetProperty("upstreamBaseUrl").GetString();
        await Send(admin.PutAsJsonAsync("/admin/services/ip-geo/versions/v2", new { baseUrl = v1, timeoutMs = 5000 }));
        Console.WriteLine($"churn: {services} services with 2 versions each, and ip-geo v2, in {watch.Elapsed.TotalSeconds:F1} s");
    }

    private static async Task ChangeWeightsAsync(HttpClient admin, int changing, double perSecond)
    {
        var ids = new List<string> { "ip-geo" };
        ids.AddRange(Enumerable.Range(0, Math.Max(0, changing - 1)).Select(ServiceId));
        var interval = TimeSpan.FromSeconds(1 / perSecond);
        var next = Stopwatch.GetTimestamp();
        for (long n = 0; ; n++)
        {
            var id = ids[(int)(n % ids.Count)];
            var split = (int)(n / ids.Count % 2) == 0 ? 90 : 50;
            await Send(admin.PutAsJsonAsync($"/admin/services/{id}/release", new { weights = new Dictionary<string, int> { ["v1"] = split, ["v2"] = 100 - split } }));
            next += (long)(interval.TotalSeconds * Stopwatch.Frequency);
            var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next);
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
            }
        }
    }

    private static string ServiceId(int i) => $"churn-{i:D4}";

    private static async Task Send(Task<HttpResponseMessage> call)
    {
        using var response = await call;
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        }
    }
}
