using System.Net;
using System.Text.Json;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>Assertions on problem+json answers.</summary>
public static class Problem
{
    /// <summary>Asserts a problem+json answer with the status, the type slug and the response's TrackId; returns its body.</summary>
    public static async Task<JsonElement> AssertAsync(HttpResponseMessage response, HttpStatusCode status, string slug)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(text).RootElement.Clone();
        Assert.Equal($"urn:marketplace:problem:{slug}", problem.GetProperty("type").GetString());
        Assert.Equal(response.Headers.GetValues("X-Track-Id").Single(), problem.GetProperty("trackId").GetString());
        return problem;
    }
}
