using System.Text.Json;

namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class SecretRotationTests(ClusterFixture fixture)
{
    private static string SecretOf(ApiKeyCreated created)
    {
        Assert.True(ApiKeySecrets.TryParse(created.ApiKey, out _, out var secret));
        return secret;
    }

    [Fact]
    public async Task Rotate_WithOneHourOverlap_BothSecretsAdmitUntilTheOldOneRetires()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, oldSecret, created) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var oldId = Assert.Single(created.Key.Secrets!).SecretId;
        var rotatedAt = fixture.Time.GetUtcNow();

        var rotated = await fixture.Key(keyId).RotateAsync(TimeSpan.FromHours(1));
        Assert.NotNull(rotated);
        Assert.StartsWith($"mk_{keyId}.", rotated.ApiKey, StringComparison.Ordinal);
        var newSecret = SecretOf(rotated);
        Assert.NotEqual(oldSecret, newSecret);
        Assert.Equal(2, rotated.Key.Secrets!.Count);
        Assert.Equal(rotatedAt + TimeSpan.FromHours(1), rotated.Key.Secrets.Single(s => s.SecretId == oldId).RetiresAt);
        Assert.Null(rotated.Key.Secrets.Single(s => s.SecretId != oldId).RetiresAt);

        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, oldSecret, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, newSecret, serviceId)).Outcome);
        fixture.Time.Advance(TimeSpan.FromHours(1) - TimeSpan.FromSeconds(1));
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, oldSecret, serviceId)).Outcome);
        fixture.Time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(AdmitOutcome.InvalidCredentials, (await fixture.AdmitAsync(keyId, oldSecret, serviceId)).Outcome);
        Assert.Null(await fixture.Key(keyId).AuthenticateAsync(oldSecret));
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, newSecret, serviceId)).Outcome);

        var info = await fixture.Key(keyId).GetAsync();
        var remaining = Assert.Single(info!.Secrets!);
        Assert.NotEqual(oldId, remaining.SecretId);
        Assert.Null(remaining.RetiresAt);
    }

    [Fact]
    public async Task Rotate_WhileTwoSecretsAreActive_ThrowsInvalidOperationAndBothKeepWorking()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, oldSecret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var newSecret = SecretOf((await fixture.Key(keyId).RotateAsync(TimeSpan.FromHours(1)))!);

        await Assert.ThrowsAsync<InvalidOperationException>(() => fixture.Key(keyId).RotateAsync(TimeSpan.FromHours(1)));

        Assert.Equal(2, (await fixture.Key(keyId).GetAsync())!.Secrets!.Count);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, oldSecret, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, newSecret, serviceId)).Outcome);

        // Once the old secret has retired, the key may rotate again.
        fixture.Time.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(1));
        Assert.NotNull(await fixture.Key(keyId).RotateAsync(TimeSpan.Zero));
    }

    [Fact]
    public async Task RetireSecret_OldSecretDuringOverlap_StopsItImmediatelyAndTheOnlySecretCannotBeRetired()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, oldSecret, created) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var oldId = Assert.Single(created.Key.Secrets!).SecretId;
        var rotated = (await fixture.Key(keyId).RotateAsync(TimeSpan.FromDays(1)))!;
        var newSecret = SecretOf(rotated);
        var newId = rotated.Key.Secrets!.Single(s => s.SecretId != oldId).SecretId;

        var afterRetire = await fixture.Key(keyId).RetireSecretAsync(oldId);

        Assert.Equal(newId, Assert.Single(afterRetire!.Secrets!).SecretId);
        Assert.Equal(AdmitOutcome.InvalidCredentials, (await fixture.AdmitAsync(keyId, oldSecret, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, newSecret, serviceId)).Outcome);
        await Assert.ThrowsAsync<InvalidOperationException>(() => fixture.Key(keyId).RetireSecretAsync(newId));
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, newSecret, serviceId)).Outcome);
        Assert.Equal(newId, Assert.Single((await fixture.Key(keyId).GetAsync())!.Secrets!).SecretId);
    }

    [Fact]
    public async Task RetireSecret_OnlySecretOfANewKey_ThrowsInvalidOperationAndKeyStillWorks()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret, created) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        await Assert.ThrowsAsync<InvalidOperationException>(() => fixture.Key(keyId).RetireSecretAsync(Assert.Single(created.Key.Secrets!).SecretId));

        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
    }

    [Fact]
    public async Task Get_AfterRotation_SecretsListNeverCarriesSecretMaterial()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var (keyId, oldSecret, created) = await fixture.CreateKeyAsync(accountId, [TestIds.Service()]);
        var rotated = (await fixture.Key(keyId).RotateAsync(TimeSpan.FromHours(1)))!;
        var newSecret = SecretOf(rotated);

        var info = await fixture.Key(keyId).GetAsync();

        Assert.Equal(2, info!.Secrets!.Count);
        foreach (var json in new[] { JsonSerializer.Serialize(info), JsonSerializer.Serialize(rotated.Key), JsonSerializer.Serialize(created.Key) })
        {
            Assert.DoesNotContain(oldSecret, json, StringComparison.Ordinal);
            Assert.DoesNotContain(newSecret, json, StringComparison.Ordinal);
            Assert.DoesNotContain(oldSecret[..16], json, StringComparison.Ordinal);
            Assert.DoesNotContain(newSecret[..16], json, StringComparison.Ordinal);
        }
    }
}
