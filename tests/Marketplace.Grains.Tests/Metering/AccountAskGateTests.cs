namespace Marketplace.Grains.Tests.Metering;

public sealed class AccountAskGateTests
{
    [Fact]
    public async Task Enter_BeyondTheLimit_WaitsForATurnInTheOrderAsked()
    {
        var gate = new AccountAskGate(2);
        await gate.EnterAsync();
        await gate.EnterAsync();
        var third = gate.EnterAsync();
        var fourth = gate.EnterAsync();

        Assert.False(third.IsCompleted);
        Assert.Equal(2, gate.Waiting);

        gate.Leave();
        await third;
        Assert.False(fourth.IsCompleted);
        Assert.Equal(2, gate.Asking);

        gate.Leave();
        await fourth;
        gate.Leave();
        gate.Leave();
        Assert.Equal(0, gate.Asking);
        Assert.Equal(0, gate.Waiting);
    }
}
