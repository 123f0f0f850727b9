using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests.Observability;

public sealed class BackgroundLoopsTests
{
    private readonly ManualTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));

    [Fact]
    public void Registered_BeatingWithinItsBound_IsHealthy()
    {
        var loops = new BackgroundLoops(_time);
        loops.Register("flusher", TimeSpan.FromSeconds(10));

        _time.Advance(TimeSpan.FromSeconds(9));
        loops.Beat("flusher");
        _time.Advance(TimeSpan.FromSeconds(9));

        var status = Assert.Single(loops.Snapshot());
        Assert.Equal("flusher", status.Name);
        Assert.True(status.IsHealthy, status.Problem);
        Assert.Equal(_time.GetUtcNow() - TimeSpan.FromSeconds(9), status.LastBeat);
    }

    [Fact]
    public void Registered_SilentPastItsBound_IsUnhealthyUntilItBeatsAgain()
    {
        var loops = new BackgroundLoops(_time);
        loops.Register("flusher", TimeSpan.FromSeconds(10));

        _time.Advance(TimeSpan.FromSeconds(10));
        var atBound = Assert.Single(loops.Snapshot());
        _time.Advance(TimeSpan.FromSeconds(5));
        var past = Assert.Single(loops.Snapshot());
        loops.Beat("flusher");
        var again = Assert.Single(loops.Snapshot());

        Assert.True(atBound.IsHealthy);
        Assert.False(past.IsHealthy);
        Assert.Contains("no cycle for 15 s", past.Problem, StringComparison.Ordinal);
        Assert.True(again.IsHealthy);
    }

    [Fact]
    public void Failed_LastCycle_IsUnhealthyWithTheReasonUntilTheNextBeat()
    {
        var loops = new BackgroundLoops(_time);
        loops.Register("flusher", TimeSpan.FromMinutes(1));
        loops.Register("batcher", TimeSpan.FromMinutes(1));

        loops.Failed("flusher", new InvalidOperationException("database down"));
        var failed = loops.Snapshot();
        loops.Beat("flusher");
        var recovered = loops.Snapshot();

        Assert.Equal(["batcher", "flusher"], failed.Select(s => s.Name));
        Assert.True(failed[0].IsHealthy);
        Assert.False(failed[1].IsHealthy);
        Assert.Contains("InvalidOperationException: database down", failed[1].Problem, StringComparison.Ordinal);
        Assert.All(recovered, s => Assert.True(s.IsHealthy));
    }

    [Fact]
    public void Register_Again_RenewsTheBoundAndTheBeat()
    {
        var loops = new BackgroundLoops(_time);
        loops.Register("flusher", TimeSpan.FromSeconds(1));
        loops.Failed("flusher", new TimeoutException("slow"));
        _time.Advance(TimeSpan.FromSeconds(30));

        loops.Register("flusher", TimeSpan.FromMinutes(1));

        Assert.True(Assert.Single(loops.Snapshot()).IsHealthy);
    }

    [Fact]
    public void BeatOrFailure_OfAnUnregisteredLoop_Throws()
    {
        var loops = new BackgroundLoops(_time);

        Assert.Throws<InvalidOperationException>(() => loops.Beat("nobody"));
        Assert.Throws<InvalidOperationException>(() => loops.Failed("nobody", new InvalidOperationException()));
        loops.Register("gone", TimeSpan.FromSeconds(1));
        loops.Unregister("gone");
        Assert.Empty(loops.Snapshot());
    }
}
