#!/usr/bin/env bash
# HTTP load benchmark: the marketplace's call path against a bare nginx reverse proxy, both in front of the
# same sample provider, same upstream request, same load generator (wrk), on this machine.
#
#   bash tests/Marketplace.Benchmarks/http-bench.sh
#
# Settings (environment): WARMUP (s per target, 20), ROUNDS (3), DURATION (s per measured run, 10),
# CONNECTIONS (8), THREADS (wrk threads, 2), DIRECT (1: also measure the provider without a proxy),
# BARE (1: also measure the bare YARP forwarder (IHttpForwarder, no checks): the .NET floor and issue 13's bar),
# CHURN (1: also measure the marketplace while 50 services, the measured one included, change release weights 50 times a
# second (CHURN_RATE, default 10), with 500 services of two versions each in the catalog),
# STRICT (1: also start a second marketplace with CallLog:Durability=strict, its own ports and embedded database, and
# measure it as target mkt-strict: each answer waits until its call-log row is stored),
# MARKETPLACE_ARGS (extra --Key=value arguments for both marketplaces), KEEP_TMP (1: keep logs and configs).
# Needs root (or sudo) only to install nginx and wrk with apt-get when they are missing.
set -euo pipefail

WARMUP="${WARMUP:-20}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-8}"
THREADS="${THREADS:-2}"
DIRECT="${DIRECT:-1}"
BARE="${BARE:-1}"
CHURN="${CHURN:-0}"
CHURN_RATE="${CHURN_RATE:-10}"
STRICT="${STRICT:-0}"
MARKETPLACE_ARGS="${MARKETPLACE_ARGS:-}"
KEEP_TMP="${KEEP_TMP:-0}"

for setting in WARMUP ROUNDS DURATION CONNECTIONS THREADS; do
  if ! [[ "${!setting}" =~ ^[0-9]+$ ]] || [ "${!setting}" -lt 1 ]; then
    echo "http-bench: $setting must be a positive integer (got '${!setting}')" >&2
    exit 2
  fi
done
if [ "$WARMUP" -lt 20 ]; then
  echo "http-bench: note: WARMUP=$WARMUP is below the recommended 20 s; the JIT and connection pools may still be cold" >&2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

echo "== Repeat this run with:"
printf '   cd %q && WARMUP=%s ROUNDS=%s DURATION=%s CONNECTIONS=%s THREADS=%s DIRECT=%s BARE=%s CHURN=%s CHURN_RATE=%s STRICT=%s MARKETPLACE_ARGS=%q bash tests/Marketplace.Benchmarks/http-bench.sh\n' \
  "$ROOT" "$WARMUP" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$DIRECT" "$BARE" "$CHURN" "$CHURN_RATE" "$STRICT" "$MARKETPLACE_ARGS"
echo "== $(date -u '+%Y-%m-%dT%H:%M:%SZ')  $(nproc) cores  $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)  $(uname -sr)"
echo "   cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)  load: $(cut -d' ' -f1-3 /proc/loadavg)"

ADMIN_KEY="bench-admin-key-0123456789abcdef"
API_KEY="mk_demo.demo-secret-0123456789abcdef"
PROVIDER_DLL="samples/Marketplace.SampleProvider/bin/Release/net10.0/Marketplace.SampleProvider.dll"
SILO_DLL="src/Marketplace.Silo/bin/Release/net10.0/Marketplace.Silo.dll"
BENCH_DLL="tests/Marketplace.Benchmarks/bin/Release/net10.0/Marketplace.Benchmarks.dll"
PRICE=2

# ---------------------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------------------
find_nginx() {
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

apt_install() {
  local -a as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "http-bench: need root or sudo to install: $*" >&2; exit 2; }
    as_root=(sudo)
  fi
  echo "== Installing $* with apt-get"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
find_nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! apt_install "${missing[@]}"; then
    # Releases without nginx-light ship the same server as plain "nginx".
    apt_install "${missing[@]/nginx-light/nginx}"
  fi
fi
NGINX="$(find_nginx)" || { echo "http-bench: nginx is not installed" >&2; exit 2; }
# This script never uses the package's service or /etc/nginx: it runs its own nginx with a generated config. (Without an
# init system, as in a container, the package's service does not start; where it does, it is not ours to stop.)
echo "== Tools: $("$NGINX" -v 2>&1 | head -1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(dotnet --version | sed 's/^/dotnet SDK /')"

# ---------------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------------
echo "== Building Marketplace.sln (Release)"
dotnet build Marketplace.sln -c Release --nologo -v quiet -clp:ErrorsOnly
[ -f "$PROVIDER_DLL" ] && [ -f "$SILO_DLL" ] || { echo "http-bench: build output missing ($PROVIDER_DLL, $SILO_DLL)" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------------
# Temp dir, processes, cleanup
# ---------------------------------------------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/mk-http-bench.XXXXXX)"
chmod 755 "$TMP"   # the embedded PostgreSQL runs as the postgres user when we are root
PROVIDER_PID=""
NGINX_PID=""
SILO_PID=""
STRICT_PID=""
WRK_PID=""
FAILED=1

stop_pid() { # pid, name, seconds to wait after SIGTERM
  local pid="$1" name="$2" wait_s="$3" i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "http-bench: $name (pid $pid) did not stop in ${wait_s}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_embedded_pg() { # data directory, port
  local data="$1" port="$2"
  if [ -f "$data/postmaster.pid" ]; then
    local pg_pid
    pg_pid="$(head -1 "$data/postmaster.pid")"
    if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
      echo "http-bench: the embedded PostgreSQL (pid $pg_pid, $data) outlived its marketplace; stopping it" >&2
      kill -INT "$pg_pid" 2>/dev/null   # PostgreSQL's "fast" shutdown
      for _ in $(seq 1 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  # The marketplace leaves the embedded server's socket directory (/tmp/mkpg-<hash of the data path>) behind.
  local socket_dir
  socket_dir="/tmp/mkpg-$(printf '%s' "$data" | sha256sum | cut -c1-12)"
  [ -d "$socket_dir" ] && [ ! -e "$socket_dir/.s.PGSQL.$port" ] && rm -rf "$socket_dir"
  return 0
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$WRK_PID" ] && kill -TERM "$WRK_PID" 2>/dev/null
  # The marketplace stops its embedded PostgreSQL on a graceful shutdown: SIGTERM and wait for it.
  stop_pid "$SILO_PID" marketplace 90
  stop_pid "$STRICT_PID" marketplace-strict 90
  stop_embedded_pg "$TMP/pg" "${PG_PORT:-}"
  stop_embedded_pg "$TMP/pg-strict" "${PG_STRICT_PORT:-}"
  stop_pid "$NGINX_PID" nginx 10
  stop_pid "${BARE_PID:-}" yarp 10
  stop_pid "$PROVIDER_PID" provider 15
  if [ "$status" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
    for log in "$TMP"/*.log; do
      [ -s "$log" ] || continue
      echo "---- last lines of $log" >&2
      tail -n 25 "$log" >&2
    done
  fi
  if [ "$KEEP_TMP" = "1" ] || [ "$status" -ne 0 ]; then
    echo "== Logs and configs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN_PORTS=" "
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 30000))
    case "$TAKEN_PORTS" in *" $port "*) continue ;; esac
    port_taken "$port" && continue
    TAKEN_PORTS+="$port "
    echo "$port"
    return
  done
}
PROVIDER_PORT="$(free_port)"; TAKEN_PORTS+="$PROVIDER_PORT "
NGINX_PORT="$(free_port)"; TAKEN_PORTS+="$NGINX_PORT "
SILO_HTTP_PORT="$(free_port)"; TAKEN_PORTS+="$SILO_HTTP_PORT "
PG_PORT="$(free_port)"; TAKEN_PORTS+="$PG_PORT "
SILO_PORT="$(free_port)"; TAKEN_PORTS+="$SILO_PORT "
GATEWAY_PORT="$(free_port)"; TAKEN_PORTS+="$GATEWAY_PORT "
BARE_PORT="$(free_port)"; TAKEN_PORTS+="$BARE_PORT "
STRICT_HTTP_PORT="$(free_port)"; TAKEN_PORTS+="$STRICT_HTTP_PORT "
PG_STRICT_PORT="$(free_port)"; TAKEN_PORTS+="$PG_STRICT_PORT "
STRICT_SILO_PORT="$(free_port)"; TAKEN_PORTS+="$STRICT_SILO_PORT "
STRICT_GATEWAY_PORT="$(free_port)"; TAKEN_PORTS+="$STRICT_GATEWAY_PORT "

PROVIDER="http://127.0.0.1:$PROVIDER_PORT"
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
MARKET="http://127.0.0.1:$SILO_HTTP_PORT"
BARE_URL="http://127.0.0.1:$BARE_PORT"
MARKET_STRICT="http://127.0.0.1:$STRICT_HTTP_PORT"

wait_http() { # url, pid, name, seconds, [curl args...]
  local url="$1" pid="$2" name="$3" wait_s="$4" i
  shift 4
  for ((i = 0; i < wait_s * 4; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "http-bench: $name exited during start-up" >&2; return 1; fi
    sleep 0.25
  done
  echo "http-bench: $name did not answer $url within ${wait_s}s" >&2
  return 1
}

echo "== Starting the sample provider on $PROVIDER"
# From its own output directory, so its appsettings.json (request logging off) applies as when deployed: started from
# the repository root it would log every request at Information level, and that logging would dominate its CPU.
(cd "$(dirname "$PROVIDER_DLL")" && exec dotnet "$(basename "$PROVIDER_DLL")" --urls "$PROVIDER") >"$TMP/provider.log" 2>&1 &
PROVIDER_PID=$!
wait_http "$PROVIDER/health" "$PROVIDER_PID" provider 60

echo "== Starting nginx on $NGINX_URL (config $TMP/nginx/nginx.conf)"
mkdir -p "$TMP/nginx/temp"
chmod -R 777 "$TMP/nginx/temp"
cat >"$TMP/nginx/nginx.conf" <<NGINX
# Generated by http-bench.sh: a bare reverse proxy with a keep-alive pool to the sample provider.
daemon off;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $TMP/nginx/temp/body;
    proxy_temp_path $TMP/nginx/temp/proxy;
    fastcgi_temp_path $TMP/nginx/temp/fastcgi;
    uwsgi_temp_path $TMP/nginx/temp/uwsgi;
    scgi_temp_path $TMP/nginx/temp/scgi;
    upstream provider {
        server 127.0.0.1:$PROVIDER_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx.log"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx.log" &
NGINX_PID=$!
wait_http "$NGINX_URL/health" "$NGINX_PID" nginx 20

if [ "$BARE" = "1" ]; then
  echo "== Starting the bare YARP forwarder (IHttpForwarder, no checks) on $BARE_URL"
  DOTNET_gcServer=1 dotnet "$BENCH_DLL" bare-proxy "$BARE_URL" "$PROVIDER" >"$TMP/yarp.log" 2>&1 &
  BARE_PID=$!
  wait_http "$BARE_URL/health" "$BARE_PID" yarp 60
fi

start_marketplace() { # url, pg port, data dir, silo port, gateway port, log name, [extra --Key=value ...]
  local url="$1" pg_port="$2" data="$3" silo_port="$4" gateway_port="$5" log="$6"
  shift 6
  # shellcheck disable=SC2086 # MARKETPLACE_ARGS is a list of --Key=value words
  dotnet "$SILO_DLL" --urls "$url" \
    --Marketplace:AdminKey="$ADMIN_KEY" \
    --Database:Embedded:DataDirectory="$data" --Database:Embedded:Port="$pg_port" \
    --Silo:SiloPort="$silo_port" --Silo:GatewayPort="$gateway_port" \
    --Demo:Enabled=true --Demo:ProviderBaseUrl="$PROVIDER" --Demo:ApiKey="$API_KEY" \
    $MARKETPLACE_ARGS "$@" >"$TMP/$log.log" 2>&1 &
}

echo "== Starting the marketplace on $MARKET (embedded PostgreSQL on :$PG_PORT, data in $TMP/pg)"
start_marketplace "$MARKET" "$PG_PORT" "$TMP/pg" "$SILO_PORT" "$GATEWAY_PORT" marketplace
SILO_PID=$!
wait_http "$MARKET/health/ready" "$SILO_PID" marketplace 180
if [ "$STRICT" = "1" ]; then
  echo "== Starting the strict marketplace on $MARKET_STRICT (CallLog:Durability=strict; embedded PostgreSQL on :$PG_STRICT_PORT, data in $TMP/pg-strict)"
  start_marketplace "$MARKET_STRICT" "$PG_STRICT_PORT" "$TMP/pg-strict" "$STRICT_SILO_PORT" "$STRICT_GATEWAY_PORT" marketplace-strict \
    --CallLog:Durability=strict
  STRICT_PID=$!
  wait_http "$MARKET_STRICT/health/ready" "$STRICT_PID" marketplace-strict 180
fi

# The demo account starts with 100.00 EUR, gone in a second of load: top it up (the maximum one top-up allows).
top_up() { # marketplace url
  curl -fsS --max-time 10 -H "X-Admin-Key: $ADMIN_KEY" -H 'Content-Type: application/json' \
    "$1/admin/accounts/demo/top-ups" -d '{"amount": 1000000000000, "reason": "benchmark"}' >/dev/null
}
for _ in 1 2 3; do top_up "$MARKET"; done
[ "$STRICT" = "1" ] && for _ in 1 2 3; do top_up "$MARKET_STRICT"; done
if [ "$CHURN" = "1" ]; then
  dotnet "$BENCH_DLL" churn setup "$MARKET" "$ADMIN_KEY" "$PROVIDER"
fi
account_field() { # field name of GET /admin/accounts/demo, integers only; [marketplace url]
  curl -fsS --max-time 10 -H "X-Admin-Key: $ADMIN_KEY" "${2:-$MARKET}/admin/accounts/demo" |
    grep -o "\"$1\":[0-9-]*" | head -1 | cut -d: -f2
}
echo "   demo account available: $(account_field available)"

# Call-log rows this marketplace has written since it started (the writer's counter marketplace.calllog.written, summed
# over its series), and the records still queued (marketplace.calllog.pending), from the Prometheus endpoint.
calllog_metric() { # marketplace url, metric name prefix
  curl -fsS --max-time 10 -H "X-Admin-Key: $ADMIN_KEY" "$1/metrics" |
    awk -v m="$2" '!/^#/ { line = $0; sub(/\{.*\}/, "", line); split(line, f, " "); if (index(f[1], m) == 1) s += f[2] }
      END { printf "%d\n", s }'
}
# Waits until every call of the run has its row stored: nothing queued and the counter unchanged over two reads.
calllog_settled() { # marketplace url -> rows written
  local url="$1" last=-1 now i
  for ((i = 0; i < 100; i++)); do
    now="$(calllog_metric "$url" marketplace_calllog_written)"
    if [ "$now" = "$last" ] && [ "$(calllog_metric "$url" marketplace_calllog_pending)" = 0 ]; then
      echo "$now"
      return
    fi
    last="$now"
    sleep 0.4
  done
  echo "$now"
}

# One request to each target must answer 200 before any load is put on it.
check_target() { # name, url, [curl args]
  local name="$1" url="$2" status
  shift 2
  status="$(curl -s -o "$TMP/check-$name.body" -w '%{http_code}' --max-time 10 "$@" "$url")"
  if [ "$status" != 200 ]; then
    echo "http-bench: FAILED: $name answered $status to $url:" >&2
    head -c 600 "$TMP/check-$name.body" >&2 || true
    echo >&2
    exit 1
  fi
}
check_target direct "$PROVIDER/ip/geo?ip=8.8.8.8"
check_target nginx "$NGINX_URL/ip/geo?ip=8.8.8.8"
[ "$BARE" = "1" ] && check_target yarp "$BARE_URL/ip/geo?ip=8.8.8.8"
check_target marketplace "$MARKET/v1/call/ip-geo/geo?ip=8.8.8.8" -H "X-Api-Key: $API_KEY"
[ "$STRICT" = "1" ] && check_target mkt-strict "$MARKET_STRICT/v1/call/ip-geo/geo?ip=8.8.8.8" -H "X-Api-Key: $API_KEY"
cmp -s "$TMP/check-direct.body" "$TMP/check-marketplace.body" ||
  echo "   note: the marketplace's body differs from the provider's (it should be passed through unchanged)"

# ---------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------
cat >"$TMP/report.lua" <<'LUA'
-- One machine-readable line at the end of a wrk run. Latencies in microseconds.
-- wrk counts a response as a status error when its status is above 399.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d bad_status=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
LUA

TICKS="$(getconf CLK_TCK)"

# utime+stime (clock ticks) of a process and its direct children (nginx workers, PostgreSQL backends).
cpu_ticks() {
  local pid="$1"
  [ -n "$pid" ] || { echo 0; return; }
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$pid" '
    { line = $0; pid = $1; sub(/^.*\) /, "", line); split(line, f, " ")
      if (pid == root || f[2] == root) total += f[12] + f[13] }
    END { printf "%d\n", total }'
}
# clock ticks, requests -> CPU microseconds per request
per_request() { awk -v t="$1" -v n="$2" -v hz="$TICKS" 'BEGIN { printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0 }'; }
pg_pid() { [ -f "$TMP/pg/postmaster.pid" ] && head -1 "$TMP/pg/postmaster.pid" || echo ""; }
PG_PID="$(pg_pid)"
PG_STRICT_PID=""
[ "$STRICT" = "1" ] && PG_STRICT_PID="$(head -1 "$TMP/pg-strict/postmaster.pid")"

declare -A PROXY_PID_OF=([direct]="" [nginx]="" [marketplace]="")
url_of() {
  case "$1" in
    direct) echo "$PROVIDER/ip/geo?ip=8.8.8.8" ;;
    nginx) echo "$NGINX_URL/ip/geo?ip=8.8.8.8" ;;
    yarp) echo "$BARE_URL/ip/geo?ip=8.8.8.8" ;;
    marketplace | mkt-churn) echo "$MARKET/v1/call/ip-geo/geo?ip=8.8.8.8" ;;
    mkt-strict) echo "$MARKET_STRICT/v1/call/ip-geo/geo?ip=8.8.8.8" ;;
  esac
}

RESULTS="$TMP/results.txt"
: >"$RESULTS"
BAD=0

# run_wrk target seconds label -> appends "label target rps p50 p99 bad proxy_us provider_us db_us requests" to RESULTS
run_wrk() {
  local target="$1" seconds="$2" label="$3" url out line
  url="$(url_of "$target")"
  local -a headers=()
  case "$target" in marketplace | mkt-churn | mkt-strict) headers=(-H "X-Api-Key: $API_KEY") ;; esac
  local proxy_pid="" db_pid="$PG_PID" market=""
  case "$target" in
    nginx) proxy_pid="$NGINX_PID" ;;
    yarp) proxy_pid="$BARE_PID" ;;
    marketplace | mkt-churn) proxy_pid="$SILO_PID"; market="$MARKET" ;;
    mkt-strict) proxy_pid="$STRICT_PID"; db_pid="$PG_STRICT_PID"; market="$MARKET_STRICT" ;;
  esac
  local charged_before=0 rows_before=0 batches_before=0
  if [ -n "$market" ]; then
    charged_before="$(account_field totalCharged "$market")"
    rows_before="$(calllog_settled "$market")"
    batches_before="$(calllog_metric "$market" marketplace_calllog_batches)"
  fi
  local churn_pid=""
  if [ "$target" = mkt-churn ]; then
    dotnet "$BENCH_DLL" churn run "$MARKET" "$ADMIN_KEY" "$PROVIDER" 500 50 "$CHURN_RATE" >>"$TMP/churn.log" 2>&1 &
    churn_pid=$!
  fi

  local p0 v0 d0 p1 v1 d1
  p0="$(cpu_ticks "$proxy_pid")"; v0="$(cpu_ticks "$PROVIDER_PID")"; d0="$(cpu_ticks "$db_pid")"
  out="$TMP/wrk-$label-$target.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$TMP/report.lua" "${headers[@]}" "$url" >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || { WRK_PID=""; echo "http-bench: wrk failed on $target:" >&2; cat "$out" >&2; exit 1; }
  WRK_PID=""
  if [ -n "$churn_pid" ]; then
    kill -0 "$churn_pid" 2>/dev/null || { echo "http-bench: the churn driver died:" >&2; tail -5 "$TMP/churn.log" >&2; exit 1; }
    kill "$churn_pid" 2>/dev/null || true
    wait "$churn_pid" 2>/dev/null || true
  fi
  p1="$(cpu_ticks "$proxy_pid")"; v1="$(cpu_ticks "$PROVIDER_PID")"; d1="$(cpu_ticks "$db_pid")"

  line="$(grep '^WRK_RESULT' "$out")" || { echo "http-bench: no result line from wrk:" >&2; cat "$out" >&2; exit 1; }
  local requests rps p50 p99 bad
  requests="$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")"
  rps="$(sed -E 's/.* rps=([0-9.]+).*/\1/' <<<"$line")"
  p50="$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$line")"
  p99="$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$line")"
  bad="$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(bad_status|connect_err|read_err|write_err|timeouts)=/) { split($i, kv, "="); s += kv[2] } } END { print s + 0 }' <<<"$line")"
  [ "$requests" -gt 0 ] || { echo "http-bench: FAILED: no request completed on $target" >&2; cat "$out" >&2; exit 1; }

  local proxy_us="-" provider_us db_us
  [ -n "$proxy_pid" ] && proxy_us="$(per_request $((p1 - p0)) "$requests")"
  provider_us="$(per_request $((v1 - v0)) "$requests")"
  db_us="$(per_request $((d1 - d0)) "$requests")"

  if [ -n "$market" ]; then
    local charged_after rows_after batches_after
    rows_after="$(calllog_settled "$market")"
    batches_after="$(calllog_metric "$market" marketplace_calllog_batches)"
    # Rows per journal commit (strict mode: how many callers shared a commit).
    echo "$label $target $(awk -v r=$((rows_after - rows_before)) -v b=$((batches_after - batches_before)) 'BEGIN { printf "%.1f", (b > 0 ? r / b : 0) }')" >>"$TMP/calllog-batch.txt"
    charged_after="$(account_field totalCharged "$market")"
    echo "$label $target charged_calls $(((charged_after - charged_before) / PRICE)) calllog_rows $((rows_after - rows_before)) wrk_requests $requests" >>"$TMP/charges.txt"
    # Call-log rows stored per second of the run (every row of the run, including those of calls in flight at the cut-off).
    echo "$label $target $(awk -v r=$((rows_after - rows_before)) -v s="$seconds" 'BEGIN { printf "%.1f", r / s }')" >>"$TMP/calllog-rate.txt"
  fi
  if [ "$bad" -ne 0 ]; then
    BAD=$((BAD + bad))
    echo "http-bench: $target ($label) had $bad failed responses (non-2xx or socket errors):" >&2
    grep -v '^WRK_RESULT' "$out" | grep -iE 'non-2xx|socket errors|requests in' >&2 || true
    echo "http-bench: one more request to $target now answers:" >&2
    curl -s -i --max-time 10 "${headers[@]}" "$url" | head -c 800 >&2 || true
    echo >&2
  fi
  echo "$label $target $rps $p50 $p99 $bad $proxy_us $provider_us $db_us $requests $(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS"
}

TARGETS=(nginx marketplace)
[ "$BARE" = "1" ] && TARGETS=(nginx yarp marketplace)
[ "$STRICT" = "1" ] && TARGETS+=(mkt-strict)
[ "$CHURN" = "1" ] && TARGETS+=(mkt-churn)
[ "$DIRECT" = "1" ] && TARGETS=(direct "${TARGETS[@]}")

echo "== Warm-up: ${WARMUP}s per target (${TARGETS[*]}), $CONNECTIONS connections, $THREADS wrk threads"
for target in "${TARGETS[@]}"; do
  run_wrk "$target" "$WARMUP" warmup
done
if [ "$BAD" -ne 0 ]; then
  echo "http-bench: FAILED: $BAD failed responses during warm-up; the benchmark is invalid" >&2
  exit 1
fi

header() {
  printf '%-8s %-12s %10s %9s %9s %7s %15s %15s %12s %6s\n' round target req/s p50_us p99_us non2xx proxy_cpu_us/req upstr_cpu_us/req db_cpu_us/req load1
}
row() {
  printf '%-8s %-12s %10.0f %9.0f %9.0f %7d %15s %15s %12s %6s\n' "$@"
}

echo "== Measuring: $ROUNDS rounds of ${DURATION}s per target, alternating (${TARGETS[*]})"
echo "   proxy_cpu = nginx master+workers or the marketplace process; upstr_cpu = the sample provider (behind both);"
echo "   db_cpu = the embedded PostgreSQL (the marketplace's journal). CPU in microseconds per request."
echo "   load1 = the machine's 1-minute load average after the run (everything here shares $(nproc) cores, wrk included)."
for ((round = 1; round <= ROUNDS; round++)); do
  for target in "${TARGETS[@]}"; do
    run_wrk "$target" "$DURATION" "r$round"
  done
  echo
  header
  grep "^r$round " "$RESULTS" | while read -r label target rps p50 p99 bad proxy provider db _ load; do
    row "$label" "$target" "$rps" "$p50" "$p99" "$bad" "$proxy" "$provider" "$db" "$load"
  done
done

# ---------------------------------------------------------------------------------------------------------------
# Summary: medians over the measured rounds
# ---------------------------------------------------------------------------------------------------------------
median() { # target column(1-based in RESULTS)
  { grep -E "^r[0-9]+ $1 " "$RESULTS" || true; } | awk -v c="$2" '{ print $c }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "== Summary: medians of $ROUNDS rounds (${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads; GET /ip/geo?ip=8.8.8.8 upstream)"
header
for target in "${TARGETS[@]}"; do
  bad_total="$(grep -E "^r[0-9]+ $target " "$RESULTS" | awk '{ s += $6 } END { print s + 0 }')"
  row median "$target" "$(median "$target" 3)" "$(median "$target" 4)" "$(median "$target" 5)" "$bad_total" \
    "$(median "$target" 7)" "$(median "$target" 8)" "$(median "$target" 9)" "$(median "$target" 11)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-" || b == "-") print "-"; else printf "%.2f", a / b }'; }
median_cpu_with_db() { # target -> median of proxy + db CPU per request (the marketplace counts its PostgreSQL)
  { grep -E "^r[0-9]+ $1 " "$RESULTS" || true; } | awk '{ print $7 + $9 }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "   marketplace / nginx:  throughput $(ratio "$(median marketplace 3)" "$(median nginx 3)")x" \
  " p50 $(ratio "$(median marketplace 4)" "$(median nginx 4)")x" \
  " p99 $(ratio "$(median marketplace 5)" "$(median nginx 5)")x" \
  " proxy CPU/request $(ratio "$(median marketplace 7)" "$(median nginx 7)")x"
if [ "$BARE" = "1" ]; then
  echo "   yarp / nginx: throughput $(ratio "$(median yarp 3)" "$(median nginx 3)")x" \
    " p50 $(ratio "$(median yarp 4)" "$(median nginx 4)")x" \
    " p99 $(ratio "$(median yarp 5)" "$(median nginx 5)")x" \
    " proxy CPU/request $(ratio "$(median yarp 7)" "$(median nginx 7)")x"
  echo "   marketplace / yarp: throughput $(ratio "$(median marketplace 3)" "$(median yarp 3)")x" \
    " p50 $(ratio "$(median marketplace 4)" "$(median yarp 4)")x" \
    " p99 $(ratio "$(median marketplace 5)" "$(median yarp 5)")x" \
    " proxy CPU/request $(ratio "$(median marketplace 7)" "$(median yarp 7)")x" \
    " CPU/request with its PostgreSQL $(ratio "$(median_cpu_with_db marketplace)" "$(median yarp 7)")x"
fi
if [ "$STRICT" = "1" ]; then
  echo "   mkt-strict / nginx:   throughput $(ratio "$(median mkt-strict 3)" "$(median nginx 3)")x" \
    " p50 $(ratio "$(median mkt-strict 4)" "$(median nginx 4)")x" \
    " p99 $(ratio "$(median mkt-strict 5)" "$(median nginx 5)")x" \
    " proxy CPU/request $(ratio "$(median mkt-strict 7)" "$(median nginx 7)")x"
  echo "   mkt-strict / marketplace (periodic): throughput $(ratio "$(median mkt-strict 3)" "$(median marketplace 3)")x" \
    " p50 $(ratio "$(median mkt-strict 4)" "$(median marketplace 4)")x" \
    " p99 $(ratio "$(median mkt-strict 5)" "$(median marketplace 5)")x" \
    " proxy CPU/request $(ratio "$(median mkt-strict 7)" "$(median marketplace 7)")x" \
    " db CPU/request $(ratio "$(median mkt-strict 9)" "$(median marketplace 9)")x"
  echo "   per round (mkt-strict / marketplace req/s):" \
    "$(for ((r = 1; r <= ROUNDS; r++)); do printf '%s ' "$(ratio "$(awk -v r="r$r" '$1 == r && $2 == "mkt-strict" { print $3 }' "$RESULTS")" \
      "$(awk -v r="r$r" '$1 == r && $2 == "marketplace" { print $3 }' "$RESULTS")")"; done)"
fi
if [ "$CHURN" = "1" ]; then
  echo "   mkt-churn / marketplace: throughput $(ratio "$(median mkt-churn 3)" "$(median marketplace 3)")x" \
    " p99 $(ratio "$(median mkt-churn 5)" "$(median marketplace 5)")x"
  echo "   per round (mkt-churn / marketplace req/s):" \
    "$(for ((r = 1; r <= ROUNDS; r++)); do printf '%s ' "$(ratio "$(awk -v r="r$r" '$1 == r && $2 == "mkt-churn" { print $3 }' "$RESULTS")" \
      "$(awk -v r="r$r" '$1 == r && $2 == "marketplace" { print $3 }' "$RESULTS")")"; done)"
fi
if [ -f "$TMP/calllog-rate.txt" ]; then
  echo "   call-log rows stored per second of load (medians of the measured rounds):" \
    "$(for target in marketplace mkt-strict mkt-churn; do
         v="$({ grep -E "^r[0-9]+ $target " "$TMP/calllog-rate.txt" || true; } | awk '{ print $3 }' | sort -g |
           awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
         [ -n "$v" ] && printf '%s %s/s  ' "$target" "$v"
       done)"
fi
if [ -f "$TMP/calllog-batch.txt" ]; then
  echo "   call-log rows per batch (one commit each; medians of the measured rounds):" \
    "$(for target in marketplace mkt-strict mkt-churn; do
         v="$({ grep -E "^r[0-9]+ $target " "$TMP/calllog-batch.txt" || true; } | awk '{ print $3 }' | sort -g |
           awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
         [ -n "$v" ] && printf '%s %s  ' "$target" "$v"
       done)"
fi
if [ -f "$TMP/charges.txt" ]; then
  echo "   charges and call-log rows (the account's totalCharged / price, and rows the call log stored, vs. wrk's completed"
  echo "   requests; calls in flight at wrk's cut-off are answered and counted after it, so both may exceed wrk's count by up to $CONNECTIONS):"
  sed 's/^/     /' "$TMP/charges.txt"
  awk -v c="$CONNECTIONS" '{ d = $6 - $8; if (d < 0 || d > c) bad++ } END { if (bad) print "     MISMATCH: " bad " runs with call-log rows outside [wrk requests, wrk requests + " c "]"; else print "     every run: one call-log row per call (rows - wrk requests within 0.." c ")" }' "$TMP/charges.txt"
fi

if [ "$BAD" -ne 0 ]; then
  echo
  echo "http-bench: FAILED: $BAD non-2xx responses or socket errors in the measured rounds; the benchmark is invalid" >&2
  exit 1
fi
FAILED=0
echo
echo "== OK: no non-2xx responses"
