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
