namespace Marketplace.Grains.Tests;

public sealed class TrackIdsTests
{
    [Theory]
    [InlineData("abcdefgh")]
    [InlineData("A.b_c-12")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void IsWellFormed_AllowedCharactersAndLength_True(string value)
    {
        Assert.True(TrackIds.IsWellFormed(value));
        Assert.Equal(value, TrackIds.AcceptOrNew(value));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("abc")]
    [InlineData("abcdefg")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0")]
    [InlineData("abc def ghi")]
    [InlineData("<script>x</script>")]
    [InlineData("x\r\ny-injected")]
    [InlineData("abcdefgh\n")]
    [InlineData("abcdéfgh")]
    [InlineData("abcd/efgh")]
    public void IsWellFormed_OtherInput_FalseAndReplaced(string? value)
    {
        Assert.False(TrackIds.IsWellFormed(value));
        var replacement = TrackIds.AcceptOrNew(value);
        Assert.NotEqual(value, replacement);
        Assert.True(TrackIds.IsWellFormed(replacement));
    }

    [Fact]
    public void New_ThousandCalls_WellFormedAndUnique()
    {
        var ids = Enumerable.Range(0, 1000).Select(_ => TrackIds.New()).ToList();

        Assert.All(ids, id => Assert.True(TrackIds.IsWellFormed(id), id));
        Assert.Equal(1000, ids.Distinct(StringComparer.Ordinal).Count());
    }
}

public sealed class TimeOrderedIdsTests
{
    [Fact]
    public void New_IsAVersionSevenIdOfTheGivenMillisecond_LaidOutAsTheRuntimeLaysItOut()
    {
        var at = new DateTimeOffset(2026, 12, 3, 13, 45, 7, 123, TimeSpan.Zero);

        var id = TimeOrderedIds.New(at);
        var reference = Guid.CreateVersion7(at);

        Assert.Equal(7, id.Version);
        Assert.Equal(0b1000, id.Variant & 0b1100); // RFC 9562's variant: 10xx
        Assert.Equal(reference.Variant & 0b1100, id.Variant & 0b1100);
        Assert.Equal(reference.ToString("N")[..12], id.ToString("N")[..12]);
        Assert.True(id.CompareTo(TimeOrderedIds.New(at.AddMilliseconds(1))) < 0, "a later millisecond sorts later");
    }

    [Fact]
    public void New_ManyInOneMillisecond_AllDifferent()
    {
        // More than one 4 KB buffer's worth, so the refill is crossed too.
        var at = DateTimeOffset.UtcNow;
        var ids = Enumerable.Range(0, 5_000).Select(_ => TimeOrderedIds.New(at)).ToHashSet();

        Assert.Equal(5_000, ids.Count);
    }
}
