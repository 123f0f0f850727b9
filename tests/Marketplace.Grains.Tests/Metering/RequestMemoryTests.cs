namespace Marketplace.Grains.Tests;

/// <summary>What a grain remembers of the requests about money it answered (<see cref="RequestMemory{T}"/>), and how senders number them.</summary>
public sealed class RequestMemoryTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;

    [Fact]
    public void Repeat_OfAnAnsweredRequest_GetsTheFirstAnswer()
    {
        var memory = new RequestMemory<string>();
        var id = new RequestId(Guid.NewGuid(), 1, 1);

        Assert.Equal(RequestSeen.New, memory.Check(id, Now, out _));
        memory.Remember(id, "first");

        Assert.Equal(RequestSeen.Repeat, memory.Check(id, Now, out var answer));
        Assert.Equal("first", answer);
        Assert.Equal(RequestSeen.New, memory.Check(id with { Sender = Guid.NewGuid() }, Now, out _));
    }

    [Fact]
    public void Answers_BelowTheSendersResolvedMark_AreForgottenAndTheirLateCopiesStale()
    {
        var memory = new RequestMemory<string>();
        var sender = Guid.NewGuid();
        for (var sequence = 1; sequence <= 3; sequence++)
        {
            var id = new RequestId(sender, sequence, 1);
            Assert.Equal(RequestSeen.New, memory.Check(id, Now, out _));
            memory.Remember(id, "answer " + sequence);
        }

        // Request 4 says the sender knows the outcome of everything below 3: only the answer to 3 is still needed.
        Assert.Equal(RequestSeen.New, memory.Check(new RequestId(sender, 4, 3), Now, out _));
        Assert.Equal(1, memory.Answers);
        Assert.Equal(RequestSeen.Stale, memory.Check(new RequestId(sender, 2, 1), Now, out _));
        Assert.Equal(RequestSeen.Repeat, memory.Check(new RequestId(sender, 3, 1), Now, out var answer));
        Assert.Equal("answer 3", answer);
    }

    [Fact]
    public void Senders_SilentLongerThanTheRetention_AreForgotten()
    {
        var memory = new RequestMemory<int>();
        for (var i = 0; i < 32; i++)
        {
            memory.Check(new RequestId(Guid.NewGuid(), 1, 1), Now, out _);
        }

        memory.Check(new RequestId(Guid.NewGuid(), 1, 1), Now + RequestMemory<int>.Retention + TimeSpan.FromSeconds(1), out _);

        Assert.Equal(1, memory.Senders);
    }

    [Fact]
    public void Numbers_ResolvedMark_IsTheOldestRequestStillOpen()
    {
        var numbers = new RequestNumbers();
        var first = numbers.Open();
        var second = numbers.Open();
        Assert.Equal((1, 1), (first.Sequence, first.Resolved));
        Assert.Equal((2, 1), (second.Sequence, second.Resolved));

        numbers.Close(second);
        Assert.Equal(1, numbers.Open().Resolved);
        numbers.Close(first);
        var fourth = numbers.Open();
        Assert.Equal(first.Sender, fourth.Sender);
        Assert.Equal(3, fourth.Resolved);
    }
}
