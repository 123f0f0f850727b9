namespace Marketplace.Grains;

/// <summary>
/// What a key can tell its account about the leases the account sent it (<see cref="LeaseRequest.Seen"/>): the account stops
/// counting the key as a lessee, and may then refuse for good, once the key says it has seen the newest lease sent to it.
/// </summary>
/// <remarks>
/// Grain calls and their answers can arrive in any order. So the newest lease a key received does not mean it has every
/// older one (an answer carrying an older lease can still be on its way), and a message saying so can reach the account
/// ahead of another that hands balance back. The key therefore vouches only for what no request still open can change: a
/// lease granted in answer to a request is newer than every lease the key had when it sent that request, and what a
/// request hands back counts as on its way until the account answers it. Used from one grain activation, so no locks.
/// </remarks>
public sealed class AccountLeaseReceipts
{
    // Requests to the account not answered yet, with the most that another message may say was seen while each is open.
    private readonly List<(long Id, long Bound)> _open = [];
    private long _lastId;
    private long _newest;

    /// <summary>The newest lease the key may say it has seen: every lease up to it arrived, and nothing handed back is on its way.</summary>
    public long Seen
    {
        get
        {
            var seen = _newest;
            foreach (var (_, bound) in _open)
            {
                seen = Math.Min(seen, bound);
            }

            return seen;
        }
    }

    /// <summary>
    /// Records a request about to be sent to the account: one whose answer may carry a lease, or one that hands balance back
    /// (<paramref name="handingBack"/>). Returns its id, for <see cref="Answered"/>, and what it may say was seen.
    /// </summary>
    public (long Id, long Seen) Open(bool handingBack)
    {
        // Read before this request counts: the account takes back what it hands back before it reads what it says was seen.
        var seen = Seen;
        _open.Add((++_lastId, handingBack ? _newest - 1 : _newest));
        return (_lastId, seen);
    }

    /// <summary>Records the account's answer to request <paramref name="id"/> (or that none will come) and the lease it carried (0: none).</summary>
    public void Answered(long id, long leaseSequence)
    {
        for (var i = 0; i < _open.Count; i++)
        {
            if (_open[i].Id == id)
            {
                _open.RemoveAt(i);
                break;
            }
        }

        _newest = Math.Max(_newest, leaseSequence);
    }
}
