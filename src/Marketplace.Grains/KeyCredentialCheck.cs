namespace Marketplace.Grains;

/// <summary>
/// Checks a caller's secret or access token against a key's <see cref="KeyCredentials"/>: the key grain with its own
/// state, a front door with the credentials its lease carries. One rule for both, so a call is refused alike wherever
/// it is checked.
/// </summary>
public static class KeyCredentialCheck
{
    /// <summary>Null when the proof is valid for the key now; otherwise why it is refused.</summary>
    public static AdmitOutcome? Check(KeyCredentials credentials, string proof, CredentialKind kind, DateTimeOffset now) =>
        Check(credentials, proof, kind, now, out _);

    /// <summary>
    /// Null when the proof is valid for the key now, with the time until which its secret or token stays valid
    /// (<paramref name="proofValidUntil"/>; the key's own status still applies); otherwise why it is refused.
    /// </summary>
    public static AdmitOutcome? Check(KeyCredentials credentials, string proof, CredentialKind kind, DateTimeOffset now, out DateTimeOffset proofValidUntil)
    {
        proofValidUntil = DateTimeOffset.MinValue;
        if (kind == CredentialKind.AccessToken)
        {
            // The key's own state comes first: a revoked key's tokens are refused as revoked, even after they were dropped.
            if (StatusRefusal(credentials, now) is { } refusal)
            {
                return refusal;
            }

            if (ApiKeySecrets.TrySplitProof(proof, out var tokenId, out var secret)
                && credentials.AccessTokens.TryGetValue(tokenId, out var token) && token.ExpiresAt > now
                && ApiKeySecrets.Verify(ApiKeySecrets.TokenSalt(tokenId), token.Hash, secret))
            {
                proofValidUntil = token.ExpiresAt;
                return null;
            }

            return AdmitOutcome.TokenInvalid;
        }

        foreach (var stored in credentials.Secrets)
        {
            if ((stored.RetiresAt is null || stored.RetiresAt > now) && ApiKeySecrets.Verify(stored.Salt, stored.Hash, proof))
            {
                proofValidUntil = stored.RetiresAt ?? DateTimeOffset.MaxValue;
                return StatusRefusal(credentials, now);
            }
        }

        return AdmitOutcome.InvalidCredentials;
    }

    /// <summary>Why a key in this state refuses every call now, or null.</summary>
    public static AdmitOutcome? StatusRefusal(KeyCredentials credentials, DateTimeOffset now) => credentials.Status switch
    {
        ApiKeyStatus.Revoked => AdmitOutcome.Revoked,
        ApiKeyStatus.Suspended => AdmitOutcome.Suspended,
        _ when credentials.ExpiresAt is { } expiry && now >= expiry => AdmitOutcome.Expired,
        _ => null,
    };
}
