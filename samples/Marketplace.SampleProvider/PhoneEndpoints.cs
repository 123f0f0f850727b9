using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.SampleProvider;

/// <summary>Response of <c>GET /phone/verify</c>; when <see cref="Valid"/> is false the other fields are null.</summary>
public sealed record PhoneVerification(
    string Number,
    bool Valid,
    string? CountryCode,
    string? Carrier,
    string? LineType,
    bool? Ported);

internal static partial class PhoneEndpoints
{
    private const double ValidShare = 0.85;

    public static RouteGroupBuilder MapPhoneService(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/phone").WithServiceControls(ControlSwitches.Phone);
        group.MapGet("/verify", Verify);
        return group;
    }

    private static Results<Ok<PhoneVerification>, ProblemHttpResult> Verify(string? number)
    {
        // A '+' in an unencoded query string arrives as a space, so surrounding whitespace is ignored.
        var trimmed = number?.Trim();
        if (trimmed is null || !NumberPattern().IsMatch(trimmed))
        {
            return TypedResults.Problem(
                detail: "Query parameter 'number' must be 6 to 15 digits with an optional leading '+'.",
                statusCode: StatusCodes.Status400BadRequest,
                title: "Invalid phone number");
        }

        var digits = trimmed.TrimStart('+');
        var normalized = "+" + digits;
        var hash = new StableHash("phone", digits);

        if (hash.Fraction(0) >= ValidShare)
        {
            return TypedResults.Ok(new PhoneVerification(normalized, false, null, null, null, null));
        }

        var country = ReferenceData.FindByDialPrefix(digits) ?? hash.Pick(1, ReferenceData.Countries);
        var lineShare = hash.Fraction(3);
        var lineType = lineShare < 0.6 ? "mobile" : lineShare < 0.9 ? "landline" : "voip";

        return TypedResults.Ok(new PhoneVerification(
            normalized,
            true,
            country.Code,
            hash.Pick(2, country.Carriers),
            lineType,
            hash.Fraction(4) < 0.2));
    }

    [GeneratedRegex(@"^\+?[0-9]{6,15}$")]
    private static partial Regex NumberPattern();
}
