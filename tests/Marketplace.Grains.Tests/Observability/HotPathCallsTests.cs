using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Marketplace.Grains.Tests.Observability;

/// <summary>The bounds on the call path's grain calls, with a fake clock and calls the test answers or leaves hanging.</summary>
public sealed class HotPathCallsTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    private readonly FakeTimeProvider _time = new();
    private readonly HotPathCalls _calls;

    public HotPathCallsTests()
    {
        _calls = new HotPathCalls(Options.Create(new HotPathOptions { GrainCallTimeout = Timeout }), _time);
    }

    [Fact]
    public async Task CallAsync_GrainHangs_ClusterUnavailableAtTheTimeoutNotOrleans30Seconds()
    {
        var call = _calls.CallAsync(Hang, HotPathRetry.WhenSafe, "API key").AsTask();
        _time.Advance(Timeout - TimeSpan.FromMilliseconds(1));
        Assert.False(call.IsCompleted);

        _time.Advance(TimeSpan.FromMilliseconds(1));
        var failure = await Assert.ThrowsAsync<ClusterUnavailableException>(() => call);

        Assert.Contains("did not answer within 2 s", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CallAsync_ConnectionDropsWhileWaiting_FailsAtOnceWhenNotRepeatable()
    {
        var attempts = 0;
        var call = _calls.CallAsync(() =>
        {
            attempts++;
            return Hang();
        }, HotPathRetry.WhenNotRun, "API key").AsTask();

        _calls.ConnectionDropped();
        var failure = await Assert.ThrowsAsync<ClusterUnavailableException>(() => call);

        Assert.Contains("dropped", failure.Message, StringComparison.Ordinal);
        Assert.Equal(1, attempts);
    }

    [Fact]
    public async Task CallAsync_ConnectionDropsWhileWaiting_RepeatedOnceWhenSafe()
    {
        var attempts = 0;
        var call = _calls.CallAsync(() => ++attempts == 1 ? Hang() : ValueTask.FromResult(42), HotPathRetry.WhenSafe, "data service").AsTask();

        _calls.ConnectionDropped();

        Assert.Equal(42, await call);
        Assert.Equal(2, attempts);
    }

    [Fact]
    public async Task CallAsync_ConnectionDroppedBeforeTheCall_DoesNotFailLaterCalls()
    {
        _calls.ConnectionDropped();

        Assert.Equal(5, await _calls.CallAsync(() => Answer(5), HotPathRetry.Never, "API key"));
    }

    [Fact]
    public async Task CallAsync_RefusedBeforeItRan_RepeatedOnceEvenForAdmission()
    {
        var attempts = 0;
        var answer = await _calls.CallAsync(() => ++attempts == 1
            ? ValueTask.FromException<int>(Rejection())
            : ValueTask.FromResult(7), HotPathRetry.WhenNotRun, "API key");

        Assert.Equal(7, answer);
        Assert.Equal(2, attempts);
    }

    [Fact]
    public async Task CallAsync_SiloWentAwayHoldingTheRequest_NotRepeatedForAdmission()
    {
        var attempts = 0;
        var call = _calls.CallAsync(() =>
        {
            attempts++;
            return ValueTask.FromException<int>(new SiloUnavailableException("gone"));
        }, HotPathRetry.WhenNotRun, "API key").AsTask();

        await Assert.ThrowsAsync<ClusterUnavailableException>(() => call);
        Assert.Equal(1, attempts);
    }

    [Fact]
    public async Task CallAsync_UntilAnswered_LostAnswersAndTimeoutsRepeatedUntilTheAnswerComes()
    {
        var attempts = 0;
        var call = _calls.CallAsync(() => ++attempts switch
        {
            1 => ValueTask.FromException<int>(new SiloUnavailableException("gone")),
            2 => ValueTask.FromException<int>(new TimeoutException("lost")),
            3 => Hang(),
            _ => ValueTask.FromResult(9),
        }, HotPathRetry.UntilAnswered, "account").AsTask();

        // The pauses between attempts and the hung attempt's bound are on the fake clock: move it until the answer comes.
        for (var step = 0; step < 10_000 && !call.IsCompleted; step++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(10));
            await Task.Yield();
        }

        Assert.Equal(9, await call);
        Assert.Equal(4, attempts);
    }

    [Fact]
    public async Task CallAsync_RuleViolationFromTheGrain_PassesThroughUnchanged()
    {
        var call = _calls.CallAsync<int>(() => throw new ArgumentException("bad input"), HotPathRetry.WhenSafe, "API key").AsTask();

        await Assert.ThrowsAsync<ArgumentException>(() => call);
    }

    // Orleans creates rejections itself (their constructors are internal): an instance as the runtime would throw it.
    private static OrleansMessageRejectionException Rejection() =>
        (OrleansMessageRejectionException)System.Runtime.CompilerServices.RuntimeHelpers.GetUninitializedObject(typeof(OrleansMessageRejectionException));

    // A grain call that never answers, as one to a hung silo.
    private static ValueTask<int> Hang() => new(new TaskCompletionSource<int>().Task);

    private static async ValueTask<int> Answer(int value)
    {
        await Task.Yield();
        return value;
    }
}
