using System.Globalization;

namespace Marketplace.SampleProvider;

/// <summary>
/// Runtime switches that make the sample services slow or failing. Thread-safe; registered as a singleton.
/// </summary>
public sealed class ControlSwitches
{
    public const string AllServices = "*";
    public const string Phone = "phone";
    public const string Ip = "ip";
    public const string Device = "device";

    private readonly Dictionary<string, ServiceState> _states = new(StringComparer.OrdinalIgnoreCase)
    {
        [Phone] = new ServiceState(),
        [Ip] = new ServiceState(),
        [Device] = new ServiceState(),
    };

    /// <summary>Creates switches with every service set to normal.</summary>
    public ControlSwitches()
    {
    }

    /// <summary>
    /// Creates switches from a configuration section such as <c>Control</c>, e.g. <c>--Control:phone:mode=fail</c>.
    /// Keys under <c>*</c> apply to every service unless the service's own section sets the same key.
    /// </summary>
    public ControlSwitches(IConfiguration controlSection)
    {
        ArgumentNullException.ThrowIfNull(controlSection);

        var shared = controlSection.GetSection(AllServices);
        foreach (var name in ServiceNames)
        {
            var own = controlSection.GetSection(name);
            if (!own.GetChildren().Any() && !shared.GetChildren().Any())
            {
                continue;
            }

            string? Value(string key) => own[key] ?? shared[key];

            var update = new ControlUpdate(
                Value("mode"),
                ParseNumber(Value("delayMs"), "delayMs", int.Parse),
                ParseNumber(Value("failureRate"), "failureRate", double.Parse),
                ParseNumber(Value("failureStatus"), "failureStatus", int.Parse));

            if (!update.TryCreateSettings(out var settings, out var errors))
            {
                var details = string.Join("; ", errors.Select(e => $"{e.Key}: {string.Join(' ', e.Value)}"));
                throw new InvalidOperationException($"Invalid configuration 'Control:{name}': {details}");
            }

            Set(name, settings);
        }
    }

    /// <summary>The names of the switchable services: phone, ip, device.</summary>
    public static IReadOnlyList<string> ServiceNames { get; } = [Phone, Ip, Device];

    /// <summary>True for a known service name or <c>*</c>.</summary>
    public static bool IsValidTarget(string service) =>
        service == AllServices || ServiceNames.Contains(service, StringComparer.OrdinalIgnoreCase);

    /// <summary>The current settings of one service.</summary>
    public ControlSettings Get(string service) => GetState(service).Settings;

    /// <summary>The current settings of every service, keyed by service name.</summary>
    public IReadOnlyDictionary<string, ControlSettings> GetAll() =>
        ServiceNames.ToDictionary(name => name, Get);

    /// <summary>Replaces the settings of one service, or of all services for <c>*</c>, and restarts its request counter.</summary>
    public void Set(string service, ControlSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);

        if (service == AllServices)
        {
            foreach (var state in _states.Values)
            {
                state.Replace(settings);
            }

            return;
        }

        GetState(service).Replace(settings);
    }

    /// <summary>Sets every service back to normal.</summary>
    public void Reset() => Set(AllServices, ControlSettings.Normal);

    /// <summary>
    /// Counts one request for the service and tells whether it must fail according to the failure rate:
    /// request n fails when floor(n * rate) differs from floor((n - 1) * rate).
    /// </summary>
    public bool ShouldFailNext(string service)
    {
        var state = GetState(service);
        var rate = state.Settings.FailureRate;
        var n = state.NextRequestNumber();
        return rate > 0 && Math.Floor(n * rate) != Math.Floor((n - 1) * rate);
    }

    private ServiceState GetState(string service) =>
        _states.TryGetValue(service, out var state)
            ? state
            : throw new ArgumentException($"Unknown service '{service}'.", nameof(service));

    private static T? ParseNumber<T>(string? text, string key, Func<string, IFormatProvider, T> parse)
        where T : struct
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        try
        {
            return parse(text.Trim(), CultureInfo.InvariantCulture);
        }
        catch (Exception exception) when (exception is FormatException or OverflowException)
        {
            throw new InvalidOperationException($"Invalid number '{text}' for Control '{key}'.", exception);
        }
    }

    private sealed class ServiceState
    {
        private readonly Lock _lock = new();
        private ControlSettings _settings = ControlSettings.Normal;
        private long _requestCount;

        public ControlSettings Settings
        {
            get
            {
                lock (_lock)
                {
                    return _settings;
                }
            }
        }

        public void Replace(ControlSettings settings)
        {
            lock (_lock)
            {
                _settings = settings;
                _requestCount = 0;
            }
        }

        public long NextRequestNumber()
        {
            lock (_lock)
            {
                return ++_requestCount;
            }
        }
    }
}
