namespace Marketplace.SampleProvider;

/// <summary>Counts calls per service and remembers the last X-Track-Id seen on a service call.</summary>
public sealed class CallStats
{
    private readonly Lock _lock = new();
    private long _phone;
    private long _ip;
    private long _device;
    private string? _lastTrackId;

    public void Record(string service, string? trackId)
    {
        lock (_lock)
        {
            switch (service)
            {
                case ControlSwitches.Phone:
                    _phone++;
                    break;
                case ControlSwitches.Ip:
                    _ip++;
                    break;
                case ControlSwitches.Device:
                    _device++;
                    break;
                default:
                    throw new ArgumentException($"Unknown service '{service}'.", nameof(service));
            }

            if (!string.IsNullOrEmpty(trackId))
            {
                _lastTrackId = trackId;
            }
        }
    }

    public CallStatsSnapshot Snapshot()
    {
        lock (_lock)
        {
            return new CallStatsSnapshot(_phone, _ip, _device, _lastTrackId);
        }
    }

    public void Reset()
    {
        lock (_lock)
        {
            _phone = 0;
            _ip = 0;
            _device = 0;
            _lastTrackId = null;
        }
    }
}

/// <summary>Response of <c>GET /_stats</c>.</summary>
public sealed record CallStatsSnapshot(long Phone, long Ip, long Device, string? LastTrackId);
