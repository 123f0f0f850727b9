namespace Marketplace.Grains.Tests.Metering;

public sealed class ReservationBookTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(10);
    private static readonly DateTimeOffset Start = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Release_NamesTheHold_ReleasesFromThatHoldOnly()
    {
        var book = new ReservationBook(Timeout);
        var first = book.Add(30, Start);
        var second = book.Add(20, Start + (Timeout / 10));

        Assert.NotEqual(first, second);
        Assert.Equal(50, book.Total);

        // More than the hold carries: only what it carries is released.
        Assert.Equal(20, book.Release(second, 25));
        Assert.Equal(30, book.Total);
        Assert.Equal(0, book.Release(second, 5));
        Assert.Equal(30, book.Release(first, 30));
        Assert.Equal(0, book.Total);
    }

    [Fact]
    public void Add_WithinOneHoldSpan_SharesTheHold()
    {
        var book = new ReservationBook(Timeout);
        var first = book.Add(1, Start);
        var later = book.Add(1, Start + (Timeout / 10) - TimeSpan.FromTicks(1));

        Assert.Equal(first, later);
        Assert.Equal(2, book.Release(first, 2));
    }

    [Fact]
    public void Expire_ReleasesWhatWasNeverReleased_NoSoonerThanTheTimeout_NoLaterThanATenthMore()
    {
        var book = new ReservationBook(Timeout);
        var early = book.Add(30, Start);
        var late = book.Add(12, Start + (Timeout / 10) - TimeSpan.FromTicks(1));
        Assert.Equal(early, late);

        // The hold stops taking reservations after a tenth of the timeout, and expires a timeout after that.
        Assert.Equal(0, book.Expire(Start + Timeout, out var none));
        Assert.Equal(0, none);
        Assert.Equal(42, book.Total);
        Assert.Equal(0, book.Expire(Start + (Timeout / 10) + Timeout - TimeSpan.FromTicks(1), out _));
        Assert.Equal(42, book.Total);

        Assert.Equal(1, book.Expire(Start + (Timeout / 10) + Timeout, out var released));
        Assert.Equal(42, released);
        Assert.Equal(0, book.Total);
        Assert.False(book.IsLive(early));
    }

    [Fact]
    public void Release_OfAnExpiredHold_ReleasesNothing_SoNewReservationsStayCovered()
    {
        var book = new ReservationBook(Timeout);
        var old = book.Add(30, Start);
        var expireAt = Start + (Timeout * 1.1);
        book.Expire(expireAt, out _);
        var current = book.Add(50, expireAt);

        // The late settlement of the old call must not free the money of the new one.
        Assert.Equal(0, book.Release(old, 30));
        Assert.Equal(50, book.Total);
        Assert.True(book.IsLive(current));
    }

    [Fact]
    public void Release_OfAnotherBooksHold_ReleasesNothing()
    {
        // A settlement meant for a previous activation of the account reaches a new one.
        var before = new ReservationBook(Timeout);
        var oldHold = before.Add(30, Start);
        var after = new ReservationBook(Timeout);
        after.Add(30, Start);

        Assert.Equal(0, after.Release(oldHold, 30));
        Assert.Equal(30, after.Total);
    }

    [Fact]
    public void Withheld_ForAPreviousBook_IsReleasedByItsHoldsOnly_AndEndsAfterEveryOldHoldExpired()
    {
        var before = new ReservationBook(Timeout);
        var oldHold = before.Add(30, Start);
        var after = new ReservationBook(Timeout);
        after.Withhold(50, Start);
        var ownHold = after.Add(10, Start);
        Assert.Equal(60, after.Total);

        // A settlement the previous book never received releases from what is withheld, never from this book's own holds.
        Assert.Equal(30, after.ReleasePrevious(oldHold, 30));
        Assert.Equal(0, after.ReleasePrevious(ownHold, 10));
        Assert.Equal(20, after.Withheld);
        Assert.Equal(30, after.Total);
        Assert.Equal(20, after.ReleasePrevious(oldHold, 25));
        Assert.Equal(0, after.ReleasePrevious(oldHold, 1));

        // What is left ends with the last hold the previous book could have made before the new one began: 1.1 × the timeout.
        var later = new ReservationBook(Timeout);
        later.Withhold(40, Start);
        Assert.Equal(0, later.Expire(Start + Timeout + (Timeout / 10) - TimeSpan.FromTicks(1), out _));
        Assert.Equal(40, later.Total);
        Assert.Equal(1, later.Expire(Start + Timeout + (Timeout / 10), out var released));
        Assert.Equal(40, released);
        Assert.Equal(0, later.Withheld);
        Assert.Equal(0, later.Total);
    }

    [Fact]
    public void Release_WithoutAHold_ReleasesOldestFirst()
    {
        var book = new ReservationBook(Timeout);
        var first = book.Add(10, Start);
        var second = book.Add(10, Start + Timeout);

        Assert.Equal(15, book.Release(0, 15));
        Assert.Equal(0, book.Release(first, 10));
        Assert.Equal(5, book.Release(second, 10));
    }
}
