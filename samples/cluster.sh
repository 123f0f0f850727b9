#!/usr/bin/env bash
# A marketplace cluster on this machine, every part on 127.0.0.1:
#   one PostgreSQL server (its own data directory, port and socket directory),
#   three silos (Host:Role=silo: grains, no public API; each with health, metrics and the dashboard),
#   one separate front door (Host:Role=frontdoor: the HTTP API, an Orleans client of the silos),
#   the sample provider (the demo catalog's upstream).
#
#   bash samples/cluster.sh         build (Release), start, wait until ready, run the internal client sample once,
#                                   print what to try, then wait; Ctrl+C stops everything
#   bash samples/cluster.sh stop    stop the cluster from another terminal
#   bash samples/cluster.sh reconcile   compare every account, key and rollup with the journal (exit 1 on a difference)
#
# Stopping is orderly (SIGTERM, then wait): the front door first (it finishes its requests and sends its last
# settlements and call-log rows), then the silos (grains write their state), the provider, and PostgreSQL last.
# Ports (override with these variables): MARKETPLACE_CLUSTER_PG_PORT 55442, _HTTP_PORT 5000 (front door),
# _SILO_HTTP_PORT 5101 (silo n: +n-1), _SILO_PORT 11111, _GATEWAY_PORT 30000, _PROVIDER_PORT 5080.
# Files: MARKETPLACE_CLUSTER_DIR (default /tmp/marketplace-cluster): database, logs, process ids; fresh on every start.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${MARKETPLACE_CLUSTER_DIR:-${TMPDIR:-/tmp}/marketplace-cluster}"
PG_PORT="${MARKETPLACE_CLUSTER_PG_PORT:-55442}"
HTTP_PORT="${MARKETPLACE_CLUSTER_HTTP_PORT:-5000}"
SILO_HTTP_PORT="${MARKETPLACE_CLUSTER_SILO_HTTP_PORT:-5101}"
SILO_PORT="${MARKETPLACE_CLUSTER_SILO_PORT:-11111}"
GATEWAY_PORT="${MARKETPLACE_CLUSTER_GATEWAY_PORT:-30000}"
PROVIDER_PORT="${MARKETPLACE_CLUSTER_PROVIDER_PORT:-5080}"
SILOS=3
CLUSTER_ID="marketplace"

ADMIN_KEY="${MARKETPLACE_ADMIN_KEY:-demo-admin-key-0123456789}"
# The same key on every node (it encrypts providers' secret headers). A fixed key for the demo only; production sets
# its own: openssl rand -base64 32.
SECRETS_KEY="${MARKETPLACE_SECRETS_KEY:-ZGVtby1vbmx5LXNlY3JldHMta2V5LTAxMjM0NTY3ODk=}"
DEMO_KEY="mk_demo.demo-secret-0123456789abcdef"
API="http://127.0.0.1:$HTTP_PORT"
PROVIDER_URL="http://127.0.0.1:$PROVIDER_PORT"
CONNECTION_STRING="Host=127.0.0.1;Port=$PG_PORT;Username=marketplace;Database=marketplace"

SILO_DLL="src/Marketplace.Silo/bin/Release/net10.0/Marketplace.Silo.dll"
PROVIDER_DLL="samples/Marketplace.SampleProvider/bin/Release/net10.0/Marketplace.SampleProvider.dll"
CLIENT_DLL="samples/Marketplace.SampleInternalService/bin/Release/net10.0/Marketplace.SampleInternalService.dll"

PG_DATA="$RUN_DIR/postgres"
PG_SOCKETS="$RUN_DIR/sockets"
LOGS="$RUN_DIR/logs"
PIDS="$RUN_DIR/pids"

log() { printf '[cluster] %s\n' "$*"; }
fail() { printf '[cluster] %s\n' "$*" >&2; exit 1; }

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return
  fi
  fail "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or PATH (Debian/Ubuntu: apt-get install -y postgresql)."
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

alive() {
  # A process that has exited but not been reaped yet (a zombie) counts as gone.
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$state" ] && [ "${state:0:1}" != "Z" ]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SIGTERM one process and wait until it has exited (SIGKILL after $2 seconds).
stop_process() {
  local name=$1 timeout=$2 file="$PIDS/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait_gone "$name" "$pid" "$timeout"
  rm -f "$file"
}

wait_gone() {
  local name=$1 pid=$2 timeout=$3 waited=0
  while alive "$pid"; do
    if [ "$waited" -ge $((timeout * 10)) ]; then
      log "$name (pid $pid) did not stop within ${timeout}s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  trap - INT TERM EXIT
  log "stopping: front door, then silos, provider, PostgreSQL"
  stop_process frontdoor 40
  local n pids=()
  for n in $(seq 1 "$SILOS"); do
    if [ -f "$PIDS/silo$n.pid" ]; then
      kill -TERM "$(cat "$PIDS/silo$n.pid")" 2>/dev/null || true
      pids+=("$n")
    fi
  done
  for n in "${pids[@]}"; do stop_process "silo$n" 40; done
  stop_process provider 10
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w >/dev/null 2>&1 || log "pg_ctl stop failed; see $LOGS/postgres.log"
  fi
  rm -f "$PIDS/cluster.pid"
  log "stopped"
}

start_dotnet() {
  local name=$1; shift
  # Its own session, so a Ctrl+C in this terminal reaches only this script, which then stops everything in order.
  setsid dotnet "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name.pid"
}

wait_ready() {
  local name=$1 url=$2 pid
  pid=$(cat "$PIDS/$name.pid")
  for _ in $(seq 1 1200); do
    if curl -fs -o /dev/null "$url"; then return 0; fi
    if ! alive "$pid"; then
      log "$name exited before it was ready; the end of $LOGS/$name.log:"
      tail -n 30 "$LOGS/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  fail "$name was not ready after 120 s ($url); see $LOGS/$name.log"
}

stop_command() {
  if [ -f "$PIDS/cluster.pid" ] && alive "$(cat "$PIDS/cluster.pid")"; then
    local pid
    pid=$(cat "$PIDS/cluster.pid")
    log "asking the running cluster.sh (pid $pid) to stop"
    kill -TERM "$pid"
    wait_gone cluster.sh "$pid" 180
    log "stopped"
  elif compgen -G "$PIDS/*.pid" >/dev/null || [ -f "$PG_DATA/postmaster.pid" ]; then
    PG_BIN=$(find_pg_bin)
    stop_all
  else
    log "no cluster is running (nothing in $RUN_DIR)"
  fi
}

case "${1:-start}" in
  stop) stop_command; exit 0 ;;
  reconcile)
    # Every account, key and rollup against the journal, through the front door; exit 1 when anything differs.
    [ -f "$SILO_DLL" ] || fail "build first: bash samples/cluster.sh"
    MARKETPLACE_ADMIN_KEY="$ADMIN_KEY" exec dotnet "$SILO_DLL" reconcile --url "$API" --wait "${2:-10}" ;;
  start) ;;
  *) fail "usage: bash samples/cluster.sh [start|stop|reconcile [WAIT_SECONDS]]" ;;
esac

if [ -f "$PIDS/cluster.pid" ] && alive "$(cat "$PIDS/cluster.pid")"; then
  fail "a cluster is already running (pid $(cat "$PIDS/cluster.pid")); stop it with: bash samples/cluster.sh stop"
fi

PG_BIN=$(find_pg_bin)
for port in "$PG_PORT" "$HTTP_PORT" "$PROVIDER_PORT" \
    $(for n in $(seq 0 $((SILOS - 1))); do echo $((SILO_HTTP_PORT + n)) $((SILO_PORT + n)) $((GATEWAY_PORT + n)); done); do
  if port_in_use "$port"; then
    fail "port $port on 127.0.0.1 is in use (another marketplace? samples/run-demo.sh?); free it or set the MARKETPLACE_CLUSTER_*_PORT variables"
  fi
done

log "building (Release)..."
build_log=$(mktemp)
for project in src/Marketplace.Silo samples/Marketplace.SampleProvider samples/Marketplace.SampleInternalService; do
  if ! dotnet build "$project" -c Release --nologo -v quiet -clp:ErrorsOnly >"$build_log" 2>&1; then
    cat "$build_log" >&2
    rm -f "$build_log"
    fail "building $project failed"
  fi
done
rm -f "$build_log"

# A fresh directory for this run; a previous run's processes are gone (checked above).
if [ -f "$PG_DATA/postmaster.pid" ]; then
  as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w >/dev/null 2>&1 || true
fi
if [ -d "$RUN_DIR" ] && [ ! -d "$PIDS" ] && [ -n "$(ls -A "$RUN_DIR")" ]; then
  fail "$RUN_DIR exists and is not a cluster directory; refusing to delete it (set MARKETPLACE_CLUSTER_DIR)"
fi
rm -rf "$RUN_DIR"
mkdir -p "$PG_DATA" "$PG_SOCKETS" "$LOGS" "$PIDS"
chmod 755 "$RUN_DIR"
echo $$ >"$PIDS/cluster.pid"
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT, data in $PG_DATA"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$PG_DATA" "$PG_SOCKETS"
  touch "$LOGS/postgres.log" && chown postgres: "$LOGS" "$LOGS/postgres.log"
fi
chmod 700 "$PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U marketplace --auth=trust -E UTF8 --no-locale >"$LOGS/initdb.log" 2>&1 \
  || { cat "$LOGS/initdb.log" >&2; fail "initdb failed"; }
as_pg setsid "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t 60 -l "$LOGS/postgres.log" \
  -o "-p $PG_PORT -k $PG_SOCKETS -c listen_addresses=127.0.0.1 -c max_connections=300" >/dev/null \
  || { tail -n 20 "$LOGS/postgres.log" >&2; fail "PostgreSQL did not start"; }
"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U marketplace -d postgres -c "CREATE DATABASE marketplace" >/dev/null

export ConnectionStrings__Marketplace="$CONNECTION_STRING"
export Marketplace__AdminKey="$ADMIN_KEY"
export Secrets__Key="$SECRETS_KEY"
export Silo__ClusterId="$CLUSTER_ID" Silo__ServiceId="$CLUSTER_ID"

log "sample provider on $PROVIDER_URL"
start_dotnet provider "$PROVIDER_DLL" --urls "$PROVIDER_URL"

# The first silo creates the cluster and loads the demo catalog; the others join it.
for n in $(seq 1 "$SILOS"); do
  i=$((n - 1))
  demo=()
  if [ "$n" -eq 1 ]; then
    demo=(--Demo:Enabled=true --Demo:ProviderBaseUrl="$PROVIDER_URL" --Demo:ApiKey="$DEMO_KEY")
  fi
  log "silo $n: http://127.0.0.1:$((SILO_HTTP_PORT + i)), silo port $((SILO_PORT + i)), gateway port $((GATEWAY_PORT + i))"
  start_dotnet "silo$n" "$SILO_DLL" --Host:Role=silo --urls "http://127.0.0.1:$((SILO_HTTP_PORT + i))" \
    --Silo:SiloPort=$((SILO_PORT + i)) --Silo:GatewayPort=$((GATEWAY_PORT + i)) "${demo[@]}"
  if [ "$n" -eq 1 ]; then
    wait_ready silo1 "http://127.0.0.1:$SILO_HTTP_PORT/health/ready"
  fi
done
for n in $(seq 2 "$SILOS"); do
  wait_ready "silo$n" "http://127.0.0.1:$((SILO_HTTP_PORT + n - 1))/health/ready"
done
wait_ready provider "$PROVIDER_URL/health"

log "front door: $API (an Orleans client of the silos)"
start_dotnet frontdoor "$SILO_DLL" --Host:Role=frontdoor --urls "$API"
wait_ready frontdoor "$API/health/ready"

log "the internal client sample (Marketplace.Client: an Orleans client, the same pipeline as HTTP callers):"
dotnet "$CLIENT_DLL" --ConnectionStrings:Marketplace="$CONNECTION_STRING" --ApiKey="$DEMO_KEY" \
  --ClusterId="$CLUSTER_ID" --ServiceId="$CLUSTER_ID" | sed 's/^/    /' || log "the internal client sample failed"

cat <<BANNER

  Marketplace cluster is running: $SILOS silos and a separate front door on one PostgreSQL.
    Front door:  $API   (API and admin API; X-Admin-Key: \$MARKETPLACE_ADMIN_KEY, default demo-admin-key-0123456789)
    Silos:       $(for n in $(seq 1 "$SILOS"); do printf 'http://127.0.0.1:%s  ' $((SILO_HTTP_PORT + n - 1)); done)(/health/ready, /metrics, /dashboard/)
    Dashboard:   http://127.0.0.1:$SILO_HTTP_PORT/dashboard/   (user: admin, password: the admin key)
    PostgreSQL:  $CONNECTION_STRING
    Logs:        $LOGS

  Make a real, charged call through the front door:
    curl -i -H "X-Api-Key: $DEMO_KEY" "$API/v1/call/phone-verify/verify?number=%2B4915112345678"

  See the charge:
    curl -H "X-Api-Key: $DEMO_KEY" $API/v1/usage

  Call from .NET as an internal service (Orleans client, no HTTP):
    dotnet $CLIENT_DLL --ConnectionStrings:Marketplace="$CONNECTION_STRING" --ApiKey=$DEMO_KEY

  Press Ctrl+C (or run: bash samples/cluster.sh stop) to stop everything.

BANNER

# Wait until asked to stop, or until one of the processes ends on its own (then stop the rest too).
set +e
wait -n "$(cat "$PIDS/frontdoor.pid")" $(for n in $(seq 1 "$SILOS"); do cat "$PIDS/silo$n.pid"; done) "$(cat "$PIDS/provider.pid")"
log "a process ended on its own; see $LOGS"
exit 1
