using System.Security.Cryptography;

namespace Marketplace.Grains;

/// <summary>
/// Time-ordered ids (UUID version 7, laid out as <see cref="Guid.CreateVersion7(DateTimeOffset)"/> lays them out) whose
/// 74 random bits come from a per-thread buffer of cryptographic randomness refilled 4 KB at a time: on Linux every
/// <see cref="Guid.NewGuid"/> is a read of the kernel's random device, and a call needs two ids (its CallId and TrackId).
/// </summary>
public static class TimeOrderedIds
{
    private const int BufferBytes = 4096;
    private const int BytesPerId = 10;

    [ThreadStatic]
    private static byte[]? _buffer;

    [ThreadStatic]
    private static int _next;

    /// <summary>A new id naming the millisecond of <paramref name="at"/>.</summary>
    public static Guid New(DateTimeOffset at)
    {
        var buffer = _buffer ??= new byte[BufferBytes];
        var next = _next;
        if (next == 0 || next + BytesPerId > BufferBytes)
        {
            RandomNumberGenerator.Fill(buffer);
            next = 0;
        }

        _next = next + BytesPerId;
        var random = buffer.AsSpan(next, BytesPerId);
        var milliseconds = at.ToUnixTimeMilliseconds();
        return new Guid(
            (int)(milliseconds >> 16),
            (short)milliseconds,
            (short)(0x7000 | ((random[0] << 8 | random[1]) & 0x0FFF)),
            (byte)(0x80 | (random[2] & 0x3F)),
            random[3], random[4], random[5], random[6], random[7], random[8], random[9]);
    }
}
