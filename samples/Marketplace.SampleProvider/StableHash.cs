using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Marketplace.SampleProvider;

/// <summary>
/// SHA-256 of a scoped input, read as eight 32-bit slots, so the same input always yields the same made-up values.
/// </summary>
internal sealed class StableHash
{
    private const int SlotCount = SHA256.HashSizeInBytes / sizeof(uint);

    private readonly byte[] _bytes;

    public StableHash(string scope, string input)
    {
        _bytes = SHA256.HashData(Encoding.UTF8.GetBytes($"{scope}|{input}"));
    }

    public uint Slot(int slot) =>
        BinaryPrimitives.ReadUInt32BigEndian(_bytes.AsSpan(slot % SlotCount * sizeof(uint), sizeof(uint)));

    /// <summary>A value in [0, maxExclusive).</summary>
    public int Range(int slot, int maxExclusive) => (int)(Slot(slot) % (uint)maxExclusive);

    /// <summary>A value in [0, 1).</summary>
    public double Fraction(int slot) => Slot(slot) / 4294967296.0;

    public T Pick<T>(int slot, IReadOnlyList<T> items) => items[Range(slot, items.Count)];
}
