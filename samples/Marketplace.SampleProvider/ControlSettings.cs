using System.Text.Json.Serialization;

namespace Marketplace.SampleProvider;

/// <summary>How a service behaves when it is called.</summary>
public enum ControlMode
{
    Normal,
    Slow,
    Fail,
    Hang,
    Reset,
    Garbage,
}

/// <summary>The current switch settings of one service.</summary>
public sealed record ControlSettings(ControlMode Mode, int DelayMs, double FailureRate, int FailureStatus)
{
    public const int DefaultFailureStatus = 500;

    /// <summary>Delay used by <see cref="ControlMode.Slow"/> when no delayMs was given.</summary>
    public const int DefaultSlowDelayMs = 5000;

    public static ControlSettings Normal { get; } = new(ControlMode.Normal, 0, 0, DefaultFailureStatus);

    /// <summary>The delay that is actually applied before answering.</summary>
    [JsonIgnore]
    public int EffectiveDelayMs => Mode == ControlMode.Slow && DelayMs == 0 ? DefaultSlowDelayMs : DelayMs;
}

/// <summary>Body of <c>PUT /_control/{service}</c>; omitted fields fall back to their defaults.</summary>
public sealed record ControlUpdate(string? Mode, int? DelayMs, double? FailureRate, int? FailureStatus)
{
    /// <summary>Validates the update and turns it into settings.</summary>
    public bool TryCreateSettings(out ControlSettings settings, out Dictionary<string, string[]> errors)
    {
        errors = [];
        var mode = ControlMode.Normal;

        if (!string.IsNullOrWhiteSpace(Mode) && !TryParseMode(Mode.Trim(), out mode))
        {
            errors["mode"] = ["Use one of normal, slow, fail, hang, reset, garbage."];
        }

        var delayMs = DelayMs ?? 0;
        if (delayMs < 0)
        {
            errors["delayMs"] = ["The delay must not be negative."];
        }

        var failureRate = FailureRate ?? 0;
        if (double.IsNaN(failureRate) || failureRate < 0 || failureRate > 1)
        {
            errors["failureRate"] = ["The failure rate must be between 0 and 1."];
        }

        var failureStatus = FailureStatus ?? ControlSettings.DefaultFailureStatus;
        if (failureStatus is < 400 or > 599)
        {
            errors["failureStatus"] = ["The failure status must be between 400 and 599."];
        }

        settings = errors.Count == 0
            ? new ControlSettings(mode, delayMs, failureRate, failureStatus)
            : ControlSettings.Normal;
        return errors.Count == 0;
    }

    private static bool TryParseMode(string text, out ControlMode mode)
    {
        foreach (var candidate in Enum.GetValues<ControlMode>())
        {
            if (string.Equals(candidate.ToString(), text, StringComparison.OrdinalIgnoreCase))
            {
                mode = candidate;
                return true;
            }
        }

        mode = ControlMode.Normal;
        return false;
    }
}
