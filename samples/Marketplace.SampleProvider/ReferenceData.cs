namespace Marketplace.SampleProvider;

internal sealed record City(string Name, double Latitude, double Longitude);

internal sealed record Country(string Code, string Name, string DialPrefix, string[] Carriers, City[] Cities);

/// <summary>Small fixed tables the made-up answers are picked from. Carrier and ISP names are invented.</summary>
internal static class ReferenceData
{
    public static IReadOnlyList<Country> Countries { get; } =
    [
        new("DE", "Germany", "49", ["Rheinfunk Mobil", "Alpennetz", "Hansa Telekom"],
            [new("Berlin", 52.52, 13.405), new("Munich", 48.137, 11.575), new("Hamburg", 53.551, 9.993)]),
        new("US", "United States", "1", ["Liberty Wireless", "Prairie Cellular", "Harbor Voice"],
            [new("New York", 40.713, -74.006), new("Chicago", 41.878, -87.63), new("Seattle", 47.606, -122.332)]),
        new("GB", "United Kingdom", "44", ["Thames Mobile", "Pennine Telecom"],
            [new("London", 51.507, -0.128), new("Manchester", 53.481, -2.243)]),
        new("FR", "France", "33", ["Gallia Mobile", "Riviera Telecom"],
            [new("Paris", 48.857, 2.352), new("Lyon", 45.764, 4.836)]),
        new("NL", "Netherlands", "31", ["Polder Mobiel", "Tulip Net"],
            [new("Amsterdam", 52.368, 4.904), new("Rotterdam", 51.924, 4.478)]),
        new("JP", "Japan", "81", ["Sakura Mobile", "Fuji Connect"],
            [new("Tokyo", 35.676, 139.65), new("Osaka", 34.694, 135.502)]),
        new("BR", "Brazil", "55", ["Samba Celular", "Amazonia Telecom"],
            [new("Sao Paulo", -23.551, -46.633), new("Rio de Janeiro", -22.907, -43.173)]),
        new("IN", "India", "91", ["Ganges Mobile", "Monsoon Telecom"],
            [new("Mumbai", 19.076, 72.878), new("Bengaluru", 12.972, 77.595)]),
        new("AU", "Australia", "61", ["Outback Mobile", "Coral Telecom"],
            [new("Sydney", -33.869, 151.209), new("Melbourne", -37.814, 144.963)]),
        new("ZA", "South Africa", "27", ["Springbok Mobile", "Karoo Connect"],
            [new("Johannesburg", -26.204, 28.047), new("Cape Town", -33.925, 18.424)]),
    ];

    public static IReadOnlyList<string> Isps { get; } =
    [
        "Northwind Fiber",
        "Contoso Broadband",
        "Fabrikam Telecom",
        "Tailspin Networks",
        "Litware Online",
        "Adatum Cable",
    ];

    public static IReadOnlyList<string> DeviceSignals { get; } =
    [
        "emulator",
        "rooted_device",
        "vpn_detected",
        "tor_exit_node",
        "new_device",
        "high_velocity",
        "timezone_mismatch",
        "proxy_detected",
    ];

    /// <summary>The country whose dialing prefix (longest first) starts the digits, or null.</summary>
    public static Country? FindByDialPrefix(string digits) =>
        Countries
            .Where(country => digits.StartsWith(country.DialPrefix, StringComparison.Ordinal))
            .OrderByDescending(country => country.DialPrefix.Length)
            .FirstOrDefault();
}
