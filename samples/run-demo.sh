#!/usr/bin/env bash
# Runs the marketplace on this machine with the demo catalog:
# embedded PostgreSQL (data in .data/postgres), the sample provider on :5080 and the marketplace on :5000.
# Needs the .NET 10 SDK and the PostgreSQL server binaries (Debian/Ubuntu: apt-get install -y postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."

export Marketplace__AdminKey="${MARKETPLACE_ADMIN_KEY:-demo-admin-key-0123456789}"
# Encrypts providers' secret upstream headers and alert signing secrets. A fixed key for the demo only (its data in
# .data/ must stay readable across runs); production sets its own: openssl rand -base64 32.
export Secrets__Key="${MARKETPLACE_SECRETS_KEY:-ZGVtby1vbmx5LXNlY3JldHMta2V5LTAxMjM0NTY3ODk=}"
DEMO_KEY="mk_demo.demo-secret-0123456789abcdef"
API="http://127.0.0.1:5000"
PROVIDER_URL="http://127.0.0.1:5080"

echo "Building..."
dotnet build Marketplace.sln -c Release --nologo -v quiet -clp:ErrorsOnly

dotnet samples/Marketplace.SampleProvider/bin/Release/net10.0/Marketplace.SampleProvider.dll --urls "$PROVIDER_URL" &
provider=$!
dotnet src/Marketplace.Silo/bin/Release/net10.0/Marketplace.Silo.dll --urls "$API" \
  --Demo:Enabled=true --Demo:ProviderBaseUrl="$PROVIDER_URL" --Demo:ApiKey="$DEMO_KEY" &
host=$!

stop() {
  kill -TERM "$host" 2>/dev/null || true
  wait "$host" 2>/dev/null || true
  kill -TERM "$provider" 2>/dev/null || true
  wait "$provider" 2>/dev/null || true
}
trap stop EXIT INT TERM

for _ in $(seq 1 120); do
  if curl -fs "$API/health/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$host" 2>/dev/null; then echo "The marketplace failed to start; see the log above." >&2; exit 1; fi
  sleep 0.5
done

cat <<BANNER

  Marketplace is running.
    API:        $API
    Dashboard:  $API/dashboard/   (user: admin, password: the admin key)
    Admin key:  \$Marketplace__AdminKey (default demo-admin-key-0123456789)
    Provider:   $PROVIDER_URL  (sample upstream)

  Make a real, charged call:
    curl -i -H "X-Api-Key: $DEMO_KEY" "$API/v1/call/phone-verify/verify?number=%2B4915112345678"

  See the charge:
    curl -H "X-Api-Key: $DEMO_KEY" $API/v1/usage

  Press Ctrl+C to stop (the embedded database stops with it).

BANNER
wait "$host"
