using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// An upstream that breaks HTTP itself, which a real HTTP server (the sample provider runs on Kestrel) cannot be made to
/// do: a raw loopback socket that reads a request and answers bytes that are not HTTP, or a response cut off before its
/// declared length. <see cref="Mode"/> switches at run time; <c>normal</c> answers a small valid JSON response.
/// </summary>
internal sealed class BrokenHttpServer : IAsyncDisposable
{
    public const string Normal = "normal";
    public const string NotHttp = "not-http";
    public const string Truncated = "truncated";

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private volatile string _mode = Normal;

    public BrokenHttpServer()
    {
        _listener.Start(backlog: 512);
        _accepting = Task.Run(AcceptAsync);
    }

    public string BaseUrl => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    public string Mode
    {
        get => _mode;
        set => _mode = value;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception exception) when (exception is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => AnswerAsync(socket));
        }
    }

    private async Task AnswerAsync(Socket socket)
    {
        using (socket)
        {
            try
            {
                // Read up to the end of the request head; the calls here carry no body.
                var buffer = new byte[8192];
                var received = 0;
                while (received < buffer.Length)
                {
                    var read = await socket.ReceiveAsync(buffer.AsMemory(received), _stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    received += read;
                    if (Encoding.ASCII.GetString(buffer, 0, received).Contains("\r\n\r\n", StringComparison.Ordinal))
                    {
                        break;
                    }
                }

                var answer = _mode switch
                {
                    NotHttp => "SSH-2.0-OpenSSH_9.6 this is not an HTTP answer\r\n\r\n\0\u0001\u0002garbage",
                    Truncated => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"country\": \"Germ",
                    _ => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\nConnection: close\r\n\r\n{\"country\": \"Norway\"}",
                };
                await socket.SendAsync(Encoding.ASCII.GetBytes(answer), _stop.Token);
                socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception exception) when (exception is SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
    }
}
