namespace Marketplace.Grains.Tests.Access;

public sealed class QuotaWindowsTests
{
    private static DateTimeOffset Utc(string iso) => DateTimeOffset.Parse(iso, System.Globalization.CultureInfo.InvariantCulture).ToUniversalTime();

    [Theory]
    [InlineData("2024-03-15T13:45:10Z", 0, "2024-03-15T00:00:00Z")]
    [InlineData("2024-03-15T00:00:00Z", 0, "2024-03-15T00:00:00Z")]
    [InlineData("2024-03-15T23:59:59.999Z", 0, "2024-03-15T00:00:00Z")]
    [InlineData("2024-03-15T21:59:59Z", 120, "2024-03-14T22:00:00Z")]
    [InlineData("2024-03-15T22:00:00Z", 120, "2024-03-15T22:00:00Z")]
    [InlineData("2024-03-15T04:59:59Z", -300, "2024-03-14T05:00:00Z")]
    [InlineData("2024-03-15T05:00:00Z", -300, "2024-03-15T05:00:00Z")]
    [InlineData("2024-01-01T03:00:00Z", -300, "2023-12-31T05:00:00Z")]
    [InlineData("2024-03-15T10:00:00Z", 345, "2024-03-14T18:15:00Z")]
    public void DayStart_OffsetFromUtc_StartsAtLocalMidnight(string now, int offsetMinutes, string expected)
    {
        var start = QuotaWindows.DayStart(Utc(now), TimeSpan.FromMinutes(offsetMinutes));

        Assert.Equal(Utc(expected), start);
        Assert.Equal(TimeSpan.Zero, start.Offset);
    }

    [Theory]
    [InlineData("2024-02-29T23:59:59Z", 0, "2024-02-01T00:00:00Z")]
    [InlineData("2024-03-01T00:00:00Z", 0, "2024-03-01T00:00:00Z")]
    [InlineData("2024-02-29T21:59:59Z", 120, "2024-01-31T22:00:00Z")]
    [InlineData("2024-02-29T22:00:00Z", 120, "2024-02-29T22:00:00Z")]
    [InlineData("2024-03-01T03:00:00Z", -300, "2024-02-01T05:00:00Z")]
    [InlineData("2024-03-01T05:00:00Z", -300, "2024-03-01T05:00:00Z")]
    [InlineData("2025-01-01T02:00:00Z", -300, "2024-12-01T05:00:00Z")]
    [InlineData("2024-12-31T23:00:00Z", 60, "2024-12-31T23:00:00Z")]
    public void MonthStart_OffsetFromUtc_StartsAtLocalFirstOfMonth(string now, int offsetMinutes, string expected)
    {
        var start = QuotaWindows.MonthStart(Utc(now), TimeSpan.FromMinutes(offsetMinutes));

        Assert.Equal(Utc(expected), start);
        Assert.Equal(TimeSpan.Zero, start.Offset);
    }

    [Theory]
    [InlineData(QuotaWindows.Day, "2024-02-28T00:00:00Z", 0, "2024-02-29T00:00:00Z")]
    [InlineData(QuotaWindows.Day, "2024-12-31T00:00:00Z", 0, "2025-01-01T00:00:00Z")]
    [InlineData(QuotaWindows.Day, "2024-03-14T22:00:00Z", 120, "2024-03-15T22:00:00Z")]
    [InlineData(QuotaWindows.Day, "2024-03-14T05:00:00Z", -300, "2024-03-15T05:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-01-01T00:00:00Z", 0, "2024-02-01T00:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-02-01T00:00:00Z", 0, "2024-03-01T00:00:00Z")]
    [InlineData(QuotaWindows.Month, "2023-02-01T00:00:00Z", 0, "2023-03-01T00:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-12-01T00:00:00Z", 0, "2025-01-01T00:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-01-31T22:00:00Z", 120, "2024-02-29T22:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-02-01T05:00:00Z", -300, "2024-03-01T05:00:00Z")]
    [InlineData(QuotaWindows.Month, "2024-11-30T23:00:00Z", 60, "2024-12-31T23:00:00Z")]
    public void Next_WindowStart_IsTheStartOfTheFollowingWindow(string window, string start, int offsetMinutes, string expected)
    {
        var next = QuotaWindows.Next(window, Utc(start), TimeSpan.FromMinutes(offsetMinutes));

        Assert.Equal(Utc(expected), next);
        Assert.Equal(TimeSpan.Zero, next.Offset);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(120)]
    [InlineData(-300)]
    [InlineData(840)]
    [InlineData(-840)]
    [InlineData(330)]
    public void Windows_AnyInstantOfTwoYears_LiesInItsWindowAndTheNextWindowStartsWhereItEnds(int offsetMinutes)
    {
        var offset = TimeSpan.FromMinutes(offsetMinutes);
        for (var at = Utc("2023-12-30T00:00:00Z"); at < Utc("2026-01-02T00:00:00Z"); at = at.AddMinutes(397))
        {
            var day = QuotaWindows.DayStart(at, offset);
            var nextDay = QuotaWindows.Next(QuotaWindows.Day, day, offset);
            Assert.InRange(at, day, nextDay.AddTicks(-1));
            Assert.Equal(nextDay, QuotaWindows.DayStart(nextDay, offset));
            Assert.Equal(TimeSpan.Zero, day.ToOffset(offset).TimeOfDay);

            var month = QuotaWindows.MonthStart(at, offset);
            var nextMonth = QuotaWindows.Next(QuotaWindows.Month, month, offset);
            Assert.InRange(at, month, nextMonth.AddTicks(-1));
            Assert.Equal(nextMonth, QuotaWindows.MonthStart(nextMonth, offset));
            Assert.Equal(1, month.ToOffset(offset).Day);
            Assert.Equal(TimeSpan.Zero, month.ToOffset(offset).TimeOfDay);
        }
    }
}
