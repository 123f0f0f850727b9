using Microsoft.Extensions.Time.Testing;

namespace Marketplace.Grains.Tests;

/// <summary>
/// The rules behind a key's epochs, without a cluster: the stored ceiling on its unsettled calls (<see cref="UnsettledCeiling"/>),
/// the unsettled calls by generation (<see cref="UnsettledCalls"/>), and what a new activation withholds (<see cref="WithheldCalls"/>).
/// </summary>
public sealed class KeyEpochRulesTests
{
    private static readonly TimeSpan Horizon = TimeSpan.FromMinutes(15);

    [Fact]
    public async Task Ceiling_Raise_IsWaitedFor_SharedByAdmissionsThatNeedIt_AndTwiceWhatIsNeeded()
    {
        var store = new Store();
        var ceiling = store.Ceiling(new FakeTimeProvider());
        var unsettled = 40L;

        var first = ceiling.EnsureAsync(() => (unsettled, 0)).AsTask();
        var second = ceiling.EnsureAsync(() => (unsettled, 0)).AsTask();

        Assert.False(first.IsCompleted);
        Assert.Equal(1, store.Saves);
        Assert.Equal(40 + UnsettledCeiling.Headroom, store.Value);
        Assert.Equal(0, ceiling.Durable);
        store.Complete();
        await Task.WhenAll(first, second);
        Assert.Equal(1, store.Saves);
        Assert.Equal(104, ceiling.Durable);

        unsettled = 300;
        var third = ceiling.EnsureAsync(() => (unsettled, 0)).AsTask();
        Assert.Equal(600, store.Value);
        store.Complete();
        await third;
        Assert.Equal((2, 600L), (store.Saves, ceiling.Durable));

        // Covered already: no write.
        unsettled = 599;
        await ceiling.EnsureAsync(() => (unsettled, 0));
        Assert.Equal(2, store.Saves);
    }

    [Fact]
    public async Task Ceiling_WriteFails_AdmissionsGoOn_TheRaisedValueIsWrittenBehind_AndRaisedAfreshAfterTheRetryInterval()
    {
        var time = new FakeTimeProvider();
        var store = new Store { Value = 10 };
        var ceiling = store.Ceiling(time);
        ceiling.Loaded(10);

        var first = ceiling.EnsureAsync(() => (20, 0)).AsTask();
        var second = ceiling.EnsureAsync(() => (20, 0)).AsTask();
        store.Fail();

        // Availability first: both go on; the raised value stays in memory and is left to the write-behind.
        await Task.WhenAll(first, second);
        Assert.Equal((84L, 10L), (store.Value, ceiling.Durable));
        Assert.True(store.Later > 0);
        Assert.True(store.Unstored > 0);

        // Within the retry interval no write is tried; after it, the next admission raises afresh and waits for it.
        await ceiling.EnsureAsync(() => (20, 0));
        Assert.Equal(1, store.Saves);
        time.Advance(UnsettledCeiling.RetryAfter);
        var third = ceiling.EnsureAsync(() => (20, 0)).AsTask();
        Assert.Equal(2, store.Saves);
        Assert.False(third.IsCompleted);
        store.Complete();
        await third;
        Assert.Equal(84, ceiling.Durable);
    }

    [Fact]
    public async Task Ceiling_WriteSlow_AdmissionsWaitAtMostTheWriteWait_ThenGoOn_AndTheWriteStillCounts()
    {
        var time = new FakeTimeProvider();
        var store = new Store();
        var ceiling = store.Ceiling(time);

        var first = ceiling.EnsureAsync(() => (20, 0)).AsTask();
        Assert.False(first.IsCompleted);
        time.Advance(UnsettledCeiling.WriteWait);
        await first;
        Assert.Equal(0, ceiling.Durable);

        // A later admission while the same write is still out waits no more, and raises nothing new.
        await ceiling.EnsureAsync(() => (21, 0));
        Assert.Equal(1, store.Saves);

        store.Complete();
        await Task.Yield();
        Assert.Equal(84, ceiling.Durable);
        await ceiling.EnsureAsync(() => (21, 0));
        Assert.Equal(1, store.Saves);
    }

    [Fact]
    public async Task Ceiling_RampToTenThousandUnsettled_WritesLogarithmically_AndWithheldCallsAreNotDoubled()
    {
        var store = new Store { Completes = true };
        var ceiling = store.Ceiling();
        for (var unsettled = 1L; unsettled <= 10_000; unsettled++)
        {
            var now = unsettled;
            await ceiling.EnsureAsync(() => (now, 0));
            Assert.True(ceiling.Durable >= unsettled);
        }

        // 65, 132, 266, 534, 1070, 2142, 4286, 8574, 17150.
        Assert.Equal(9, store.Saves);

        var inherited = new Store { Completes = true, Value = 5_000 };
        var next = inherited.Ceiling();
        next.Loaded(5_000);
        await next.EnsureAsync(() => (1, 5_000));
        Assert.Equal(5_000 + 1 + UnsettledCeiling.Headroom, inherited.Value);
    }

    [Fact]
    public async Task Ceiling_Lowered_OnlyOnceTheUnsettledCallsStayedBelowAQuarterForAWhile_WithoutAWriteOfItsOwn()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var store = new Store { Completes = true };
        var ceiling = store.Ceiling(time);
        await ceiling.EnsureAsync(() => (1_000, 0));
        Assert.Equal(2_000, store.Value);

        // A lease given back and calls settled: far below, but the peak is recent.
        Assert.True(ceiling.Relax(10, 0));
        time.Advance(UnsettledCeiling.LowerAfter);
        Assert.True(ceiling.Relax(10, 0));
        Assert.Equal((2_000L, 0), (store.Value, store.Later));

        time.Advance(UnsettledCeiling.LowerAfter);
        Assert.False(ceiling.Relax(10, 0));
        Assert.Equal((UnsettledCeiling.Headroom, 1), (store.Value, store.Later));
        Assert.Equal(UnsettledCeiling.Headroom, ceiling.Durable);
        Assert.Equal(1, store.Saves);

        // Going away: exactly what is unsettled, written.
        await ceiling.SettleAsync(3);
        Assert.Equal((3L, 2), (store.Value, store.Saves));
    }

    [Fact]
    public void Unsettled_SettledFromTheOldestGeneration_DroppedAHorizonOnce_GivenBackOnlyWhileItsGenerationLives()
    {
        var start = DateTimeOffset.UtcNow;
        var calls = new UnsettledCalls(Horizon, start);
        var old = calls.Add(10, start);
        var newer = calls.Add(5, start + Horizon);
        Assert.Equal(15, calls.Count);

        // Settlements name no time: taken off the older generation first.
        calls.Settle(3, start + Horizon);
        calls.GiveBack(2, newer, start + Horizon);
        Assert.Equal(10, calls.Count);

        // A horizon after the newer generation began, the older one has settled: what was not taken off it goes with it. (The
        // calls given back were the newer generation's, but taken off the older one, so the newer one keeps more than it has.)
        Assert.Equal(5, calls.CountAt(start + (2 * Horizon)));
        calls.GiveBack(4, old, start + (2 * Horizon));
        Assert.Equal(5, calls.Count);
        calls.Settle(10, start + (2 * Horizon));
        Assert.Equal(0, calls.Count);
        Assert.Equal(0, calls.CountAt(start + (5 * Horizon)));
    }

    [Fact]
    public void Withheld_ConfirmedOnceEach_SeededDeliveriesOnlyAtOrBelowTheReadsMark_EndsAtTheHorizon()
    {
        var since = DateTimeOffset.UtcNow;
        var sender = Guid.NewGuid();
        var withheld = new WithheldCalls(100, new Dictionary<Guid, long> { [sender] = 5 }, since, Horizon);

        Assert.True(withheld.FirstOfSeeded(new DeliveryId(sender, 4)));
        Assert.False(withheld.FirstOfSeeded(new DeliveryId(sender, 4)));
        Assert.True(withheld.FirstOfSeeded(new DeliveryId(sender, 5)));
        Assert.False(withheld.FirstOfSeeded(new DeliveryId(sender, 6)));
        Assert.False(withheld.FirstOfSeeded(new DeliveryId(Guid.NewGuid(), 1)));
        Assert.True(withheld.FirstReport(7, 1));
        Assert.False(withheld.FirstReport(7, 1));
        Assert.True(withheld.FirstReport(8, 1));

        Assert.False(withheld.Confirm(60));
        Assert.Equal(40, withheld.For(since.AddHours(-1)));
        Assert.Equal(0, withheld.For(since.AddSeconds(1)));
        Assert.False(withheld.Expire(since + Horizon - TimeSpan.FromTicks(1)));
        Assert.True(withheld.Expire(since + Horizon));
        Assert.Equal(0, withheld.Remaining);

        var confirmed = new WithheldCalls(10, new Dictionary<Guid, long>(), since, Horizon);
        Assert.True(confirmed.Confirm(25));
        Assert.False(confirmed.Expire(since + Horizon));
    }

    // The key's stored ceiling as a test drives it: saves wait for the test unless Completes.
    private sealed class Store
    {
        private TaskCompletionSource? _save;

        public long Value { get; set; }

        public bool Completes { get; init; }

        public int Saves { get; private set; }

        public int Later { get; private set; }

        public int Unstored { get; private set; }

        public UnsettledCeiling Ceiling(TimeProvider? time = null) =>
            new(() => Value, value => Value = value, SaveAsync, () => Later++, time ?? TimeProvider.System, (_, _) => Unstored++);

        public void Complete() => _save!.SetResult();

        public void Fail() => _save!.SetException(new InvalidOperationException("storage away"));

        private Task SaveAsync()
        {
            Saves++;
            if (Completes)
            {
                return Task.CompletedTask;
            }

            _save = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _save.Task;
        }
    }
}
