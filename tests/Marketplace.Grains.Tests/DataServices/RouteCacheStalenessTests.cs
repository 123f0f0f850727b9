using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Marketplace.Grains.Tests.DataServices;

/// <summary>
/// The route cache without a cluster: a source the test answers by hand and a fake clock, so "the grain hangs" and
/// "time passes" are exact.
/// </summary>
public sealed class RouteCacheStalenessTests
{
    private static readonly RoutingOptions Options = new()
    {
        MaxAge = TimeSpan.FromSeconds(1), MaxStaleness = TimeSpan.FromMinutes(5), RefetchPatience = TimeSpan.FromMilliseconds(250),
    };

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 12, 0, 0, TimeSpan.Zero));
    private readonly ManualSource _source = new();
    private readonly ServiceRouteCache _cache;

    public RouteCacheStalenessTests()
    {
        _cache = new ServiceRouteCache(_source, _time, new UpstreamSecrets(Microsoft.Extensions.Options.Options.Create(new SecretsOptions())),
            Microsoft.Extensions.Options.Options.Create(Options), NullLogger<ServiceRouteCache>.Instance);
    }

    [Fact]
    public async Task GetAsync_ConcurrentCallersDuringARefetch_ShareOneFetchAndGetTheOldRoute()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(TimeSpan.FromMilliseconds(600));

        var during = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => _cache.GetAsync("svc").AsTask()));

        Assert.All(during, route => Assert.Equal(1, route!.Route.Revision));
        Assert.Equal(2, _source.Asked);
        _source.Answer(Route(revision: 2));
        Assert.Equal(2, (await _cache.GetAsync("svc"))!.Route.Revision);
    }

    [Fact]
    public async Task GetAsync_RouteOlderThanMaxAgeWhileTheGrainHangs_OldRouteAfterThePatienceAndThenWithoutWaiting()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(TimeSpan.FromSeconds(2));

        var first = _cache.GetAsync("svc").AsTask();
        Assert.False(first.IsCompleted);
        _time.Advance(Options.RefetchPatience);
        var firstRoute = await first;

        // The refetch is still hanging: later calls do not wait for it, nor start another.
        var later = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => _cache.GetAsync("svc").AsTask()));

        Assert.Equal(1, firstRoute!.Route.Revision);
        Assert.All(later, route => Assert.Equal(1, route!.Route.Revision));
        Assert.Equal(2, _source.Asked);
    }

    [Fact]
    public async Task GetAsync_UnreachableGrain_AskedOncePerMaxAgeNotOncePerCall()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(TimeSpan.FromSeconds(2));
        var waiting = _cache.GetAsync("svc").AsTask();
        _source.Fail(new ClusterUnavailableException("gone"));
        Assert.Equal(1, (await waiting)!.Route.Revision);

        for (var i = 0; i < 100; i++)
        {
            Assert.Equal(1, (await _cache.GetAsync("svc"))!.Route.Revision);
            _time.Advance(TimeSpan.FromMilliseconds(5));
        }

        Assert.Equal(2, _source.Asked);
        _time.Advance(Options.MaxAge);
        _ = await _cache.GetAsync("svc");
        Assert.Equal(3, _source.Asked);
    }

    [Fact]
    public async Task GetAsync_RouteOlderThanMaxStalenessAndGrainUnreachable_ClusterUnavailable()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(Options.MaxStaleness - TimeSpan.FromSeconds(1));
        var stillServing = _cache.GetAsync("svc").AsTask();
        _source.Fail(new ClusterUnavailableException("gone"));
        Assert.Equal(1, (await stillServing)!.Route.Revision);

        _time.Advance(TimeSpan.FromSeconds(2));
        var tooOld = _cache.GetAsync("svc").AsTask();
        _source.Fail(new ClusterUnavailableException("gone"));

        await Assert.ThrowsAsync<ClusterUnavailableException>(() => tooOld);
    }

    [Fact]
    public async Task GetAsync_ReachableGrainAfterMaxAge_ChangeInForceOnTheNextCall()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(Options.MaxAge);

        var next = _cache.GetAsync("svc").AsTask();
        _source.Answer(Route(revision: 2, ServiceStatus.Suspended));

        Assert.Equal(ServiceStatus.Suspended, (await next)!.Route.Status);
    }

    [Fact]
    public async Task GetAsync_GrainBackAfterAnOutage_NewRouteServedAgain()
    {
        await PrimeAsync(revision: 1);
        _time.Advance(TimeSpan.FromSeconds(30));
        var during = _cache.GetAsync("svc").AsTask();
        _source.Fail(new ClusterUnavailableException("gone"));
        Assert.Equal(1, (await during)!.Route.Revision);

        _time.Advance(Options.MaxAge);
        var after = _cache.GetAsync("svc").AsTask();
        _source.Answer(Route(revision: 3));
        _ = await after;

        Assert.Equal(3, (await _cache.GetAsync("svc"))!.Route.Revision);
    }

    [Fact]
    public async Task GetAsync_NothingKnownAndTheFirstFetchFailed_RefusedWithoutAskingAgainUntilMaxAge()
    {
        var callers = Enumerable.Range(0, 10).Select(_ => _cache.GetAsync("svc").AsTask()).ToArray();
        _source.Fail(new ClusterUnavailableException("gone"));
        foreach (var caller in callers)
        {
            await Assert.ThrowsAsync<ClusterUnavailableException>(() => caller);
        }

        await Assert.ThrowsAsync<ClusterUnavailableException>(() => _cache.GetAsync("svc").AsTask());
        Assert.Equal(1, _source.Asked);
    }

    private async Task PrimeAsync(int revision)
    {
        var first = _cache.GetAsync("svc").AsTask();
        _source.Answer(Route(revision));
        Assert.Equal(revision, (await first)!.Route.Revision);
    }

    private static ServiceRoute Route(int revision, ServiceStatus status = ServiceStatus.Published) =>
        new("svc", 1, "EUR", revision, null, status, ChargeRule.PerSuccess, [], new Dictionary<string, int>(), new Dictionary<string, string>());

    // A route source that answers only when the test says so (inline, so the cache has taken the answer when Answer returns);
    // counts how often it was asked.
    private sealed class ManualSource : IRouteSource
    {
        private readonly Queue<TaskCompletionSource<ServiceRoute?>> _asked = new();
        private int _count;

        public int Asked => Volatile.Read(ref _count);

        public ValueTask<ServiceRoute?> GetRouteAsync(string serviceId)
        {
            Interlocked.Increment(ref _count);
            var pending = new TaskCompletionSource<ServiceRoute?>();
            lock (_asked)
            {
                _asked.Enqueue(pending);
            }

            return new ValueTask<ServiceRoute?>(pending.Task);
        }

        public void Answer(ServiceRoute? route) => Next().SetResult(route);

        public void Fail(Exception exception) => Next().SetException(exception);

        private TaskCompletionSource<ServiceRoute?> Next()
        {
            lock (_asked)
            {
                return _asked.Dequeue();
            }
        }
    }
}
