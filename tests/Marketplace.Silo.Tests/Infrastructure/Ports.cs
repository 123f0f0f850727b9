using System.Net;
using System.Net.Sockets;

namespace Marketplace.Silo.Tests.Infrastructure;

public static class Ports
{
    /// <summary>A TCP port on loopback that is free right now.</summary>
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
