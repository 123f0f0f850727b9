namespace Marketplace.Grains.Tests.Metering;

public sealed class AccountLeaseReceiptsTests
{
    [Fact]
    public void Seen_NewerLeaseAnsweredFirst_StaysBelowTheOlderOneStillOnItsWay()
    {
        var receipts = new AccountLeaseReceipts();
        var (older, _) = receipts.Open(handingBack: false);
        var (newer, _) = receipts.Open(handingBack: false);

        // The account granted lease 7 to the older request and 8 to the newer; the newer answer is processed first.
        receipts.Answered(newer, 8);

        Assert.True(receipts.Seen < 7, "the key vouched for lease 7 before it arrived");
        receipts.Answered(older, 7);
        Assert.Equal(8, receipts.Seen);
    }

    [Fact]
    public void Seen_WhileAHandBackIsOnItsWay_StaysBelowTheLeaseItHandsBack()
    {
        var receipts = new AccountLeaseReceipts();
        var (ask, _) = receipts.Open(handingBack: false);
        receipts.Answered(ask, 5);

        // The lease goes back in one message; a recall's answer sent meanwhile may reach the account first.
        var (handBack, carried) = receipts.Open(handingBack: true);
        Assert.Equal(5, carried);
        Assert.True(receipts.Seen < 5, "another message would tell the account the key is done while its lease is on its way");

        receipts.Answered(handBack, 0);
        Assert.Equal(5, receipts.Seen);
    }

    [Fact]
    public void Open_AfterEveryAnswer_CarriesTheNewestLease()
    {
        var receipts = new AccountLeaseReceipts();
        var (first, seen) = receipts.Open(handingBack: false);
        var (second, _) = receipts.Open(handingBack: true);
        Assert.Equal(0, seen);

        receipts.Answered(first, 3);
        receipts.Answered(second, 0);

        Assert.Equal(3, receipts.Open(handingBack: false).Seen);
    }
}
