#!/usr/bin/env bash
# kurad vs nginx (WebDAV) on the same machine, same run, same files, same load
# generator (wrk + Lua, curl for the 1 GiB objects). Prints one table with the
# kurad value, the nginx value and the ratio kurad/nginx for every metric.
#
# Usage: kura-bins/kurad/bench/compare-nginx.sh
# Needs: cargo, curl, nginx, wrk   (apt-get install nginx wrk)
# Env (defaults in brackets; the whole run takes about 3-4 minutes after the build):
#   DURATION [10s]      wrk duration of the 4 KiB GET / 4 KiB PUT / 64 MiB GET runs
#   WARMUP [2s]         wrk warm-up before each GET measurement (not reported)
#   UP_DURATION [5s]    wrk duration of the /up and small static file latency runs
#   CONNS [64]          connections for the 4 KiB runs
#   BIG_CONNS [4]       connections for the 64 MiB GET run
#   UP_CONNS [1]        connections for the /up latency run
#   THREADS [2]         wrk threads
#   KEYS [1000]         number of 4 KiB objects pre-populated on both servers
#   HUGE_MIB [1024]     size of the "1 GiB" object, MiB
#   NGINX_WORKERS [2]   nginx worker_processes (the machine has 2 cores)
#   BENCH_DIR [mktemp -d]  scratch directory (must be a real disk: fsync on tmpfs is free)
#   KEEP_TMP [0]        1 keeps BENCH_DIR after the run
#   SETTLE [1]          1 runs sync(1) before every measured phase (see run_wrk)
#   SKIP_BUILD [0]      1 uses the existing release binary
#   KURAD [$CARGO_TARGET_DIR or target]/release/kurad   the kurad binary to measure
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
UP_DURATION=${UP_DURATION:-5s}
CONNS=${CONNS:-64}
BIG_CONNS=${BIG_CONNS:-4}
UP_CONNS=${UP_CONNS:-1}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
HUGE_MIB=${HUGE_MIB:-1024}
NGINX_WORKERS=${NGINX_WORKERS:-2}
KEEP_TMP=${KEEP_TMP:-0}
SETTLE=${SETTLE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

missing=()
for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing ${missing[*]}: install with 'apt-get install nginx wrk curl'"
fi
[[ -x /usr/sbin/nginx ]] || true

# ---------------------------------------------------------------- build
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "cargo build --release -p kurad"
    (cd "$ROOT" && cargo build --release -p kurad)
fi
KURAD=${KURAD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/kurad}
[[ -x "$KURAD" ]] || die "$KURAD not found (build failed?)"

# ---------------------------------------------------------------- scratch + cleanup
BENCH_DIR=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kurad-vs-nginx.XXXXXX")}
mkdir -p "$BENCH_DIR"
if [[ "$(stat -f -c %T "$BENCH_DIR")" == tmpfs ]]; then
    log "warning: $BENCH_DIR is on tmpfs, fsync costs nothing there; set BENCH_DIR to a disk"
fi
KURAD_PID=""
NGINX_PID=""
stop_pid() { # pid: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    set +e
    stop_pid "$KURAD_PID"
    stop_pid "$NGINX_PID"
    if [[ "$KEEP_TMP" == 1 ]]; then
        log "kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 - <<'EOF' 2>/dev/null && return 0
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
    local p i
    for ((i = 0; i < 100; i++)); do # fallback: a random port nobody listens on
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    die "no free port"
}

wait_http() { # url pid name: poll until any HTTP answer, 30 s deadline
    local url=$1 pid=$2 name=$3 deadline=$((SECONDS + 30)) code
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (logs in $BENCH_DIR)"
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)
        [[ "$code" != 000 && -n "$code" ]] && return 0
        sleep 0.05
    done
    die "$name not ready within 30 s"
}

# ---------------------------------------------------------------- servers
KPORT=$(free_port)
NPORT=$(free_port)
while [[ "$NPORT" == "$KPORT" ]]; do NPORT=$(free_port); done
K="http://127.0.0.1:$KPORT"
N="http://127.0.0.1:$NPORT"

mkdir -p "$BENCH_DIR/kurad-data" "$BENCH_DIR/nginx/logs" "$BENCH_DIR/nginx/tmp" "$BENCH_DIR/nginx-root"
log "starting kurad on $K (data $BENCH_DIR/kurad-data, durability always)"
KURA_LOG=${KURA_LOG:-info} "$KURAD" --bind-address 127.0.0.1 --port "$KPORT" \
    --data-dir "$BENCH_DIR/kurad-data" --durability always \
    >"$BENCH_DIR/kurad.log" 2>&1 &
KURAD_PID=$!

NGINX_USER=""
[[ "$(id -u)" == 0 ]] && NGINX_USER="user root;"
cat >"$BENCH_DIR/nginx/nginx.conf" <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $BENCH_DIR/nginx/nginx.pid;
error_log $BENCH_DIR/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $BENCH_DIR/nginx/tmp/body;
    proxy_temp_path $BENCH_DIR/nginx/tmp/proxy;
    fastcgi_temp_path $BENCH_DIR/nginx/tmp/fastcgi;
    uwsgi_temp_path $BENCH_DIR/nginx/tmp/uwsgi;
    scgi_temp_path $BENCH_DIR/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NPORT;
        root $BENCH_DIR/nginx-root;
        client_max_body_size 2g;
        location / {
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }
    }
}
EOF
log "starting nginx on $N (root $BENCH_DIR/nginx-root, $NGINX_WORKERS workers)"
nginx -p "$BENCH_DIR/nginx" -e "$BENCH_DIR/nginx/logs/error.log" -c "$BENCH_DIR/nginx/nginx.conf" \
    >"$BENCH_DIR/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!

wait_http "$K/up" "$KURAD_PID" kurad
wait_http "$N/" "$NGINX_PID" nginx
RSS_IDLE=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$KURAD_PID/status")

# ---------------------------------------------------------------- helpers
# prefix of an object key on each server
kpre="/ccache/"
npre="/"

LOAD_SAMPLES=()
sample_load() { LOAD_SAMPLES+=("$(cut -d' ' -f1-3 /proc/loadavg)"); }

to_us() { # "1.23ms" -> microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000;
        else if (u == "m") f = 60000000; else f = 1;
        printf "%.1f", n * f }'
}
to_mib() { # wrk "123.45MB" (binary units) -> MiB
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "B") f = 1 / 1048576; else if (u == "KB") f = 1 / 1024; else if (u == "MB") f = 1;
        else if (u == "GB") f = 1024; else f = 1;
        printf "%.1f", n * f }'
}

# run_wrk name conns duration url [lua] -> sets W_RPS W_P50 W_P99 W_MIBS W_ERR
run_wrk() {
    local name=$1 conns=$2 dur=$3 url=$4 lua=${5:-} out threads=$THREADS
    ((threads > conns)) && threads=$conns
    local args=(-t"$threads" -c"$conns" -d"$dur" --latency --timeout 30s)
    [[ -n "$lua" ]] && args+=(-s "$lua")
    out="$BENCH_DIR/wrk-$name.txt"
    # Start every phase with no dirty pages left by the previous one (nginx's 1 GiB PUT,
    # for example, leaves up to 1 GiB for the kernel to write back, which then queues
    # in front of kurad's fsyncs or nginx's writes). Fair to both: neither server's own
    # phase is synced, only what came before it.
    [[ $SETTLE == 1 ]] && sync
    wrk "${args[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; die "wrk $name failed"; }
    W_RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    W_P50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
    W_P99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
    W_MIBS=$(to_mib "$(awk '/^Transfer\/sec:/ {print $2}' "$out")")
    W_ERR=$(awk '/Non-2xx or 3xx responses:/ {e += $NF} /Socket errors:/ {gsub(",", ""); e += $4 + $6 + $8 + $10} END {print e + 0}' "$out")
    local total
    total=$(awk '/requests in/ {print $1}' "$out")
    if [[ "$W_ERR" != 0 ]]; then
        log "warning: $name: $W_ERR errors / non-2xx out of $total requests (see $out)"
        ERRORS+=("$name: $W_ERR errors of $total")
    fi
    log "$name: $W_RPS req/s, p50 ${W_P50} us, p99 ${W_P99} us, $W_MIBS MiB/s, $total requests"
    sample_load
}
ERRORS=()

# upload files with one curl process (keep-alive): put_many base_url list_file
put_many() {
    local base=$1 list=$2 cfg codes bad
    cfg="$BENCH_DIR/curl-$RANDOM.cfg"
    : >"$cfg"
    while read -r key file; do
        printf 'url = "%s%s"\nupload-file = "%s"\noutput = "/dev/null"\n' "$base" "$key" "$file" >>"$cfg"
    done <"$list"
    codes=$(curl -sS -m 600 -H 'Expect:' -w '%{http_code}\n' -K "$cfg")
    bad=$(grep -cv '^2' <<<"$codes" || true)
    ((bad == 0)) || die "populating $base: $bad uploads failed ($(sort <<<"$codes" | uniq -c | tr '\n' ' '))"
}

RSS_KB() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }

fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }

ROWS=()
row() { ROWS+=("$1|$2|$3|$(fmt_ratio "$2" "$3")"); }
HROWS=() # the 1 GiB phase runs first but is printed after the 64 MiB GET
hrow() { HROWS+=("$1|$2|$3|$(fmt_ratio "$2" "$3")"); }

sample_load

# ---------------------------------------------------------------- test data
log "generating $KEYS x 4 KiB objects, one 64 MiB object, one ${HUGE_MIB} MiB object"
mkdir -p "$BENCH_DIR/src/small"
head -c $((KEYS * 4096)) /dev/urandom >"$BENCH_DIR/src/small.bin"
(cd "$BENCH_DIR/src/small" && split -a 6 -d -b 4096 ../small.bin o && rm ../small.bin)
: >"$BENCH_DIR/src/small.list"
i=0
for f in "$BENCH_DIR"/src/small/o*; do
    echo "get-$i $f" >>"$BENCH_DIR/src/small.list"
    i=$((i + 1))
done
head -c $((64 << 20)) /dev/urandom >"$BENCH_DIR/src/big64.bin"
head -c "$((HUGE_MIB << 20))" /dev/urandom >"$BENCH_DIR/src/huge.bin"
printf '{"status":"ok"}\n' >"$BENCH_DIR/src/up.json"

log "populating both servers ($KEYS small keys, big64, up.json)"
{ cat "$BENCH_DIR/src/small.list"; echo "big64 $BENCH_DIR/src/big64.bin"; } >"$BENCH_DIR/src/all.list"
put_many "$K$kpre" "$BENCH_DIR/src/all.list"
put_many "$N$npre" "$BENCH_DIR/src/all.list"
echo "up.json $BENCH_DIR/src/up.json" >"$BENCH_DIR/src/up.list"
put_many "$N$npre" "$BENCH_DIR/src/up.list"
# sanity: same bytes back from both
for srv in "$K$kpre" "$N$npre"; do
    curl -sS -f -m 30 "${srv}get-0" | cmp -s - "$BENCH_DIR/src/small/o000000" || die "GET ${srv}get-0 differs"
done

# ---------------------------------------------------------------- wrk Lua scripts
cat >"$BENCH_DIR/get.lua" <<'EOF'
-- GET spread over BENCH_KEYS keys get-0 .. get-(n-1); each thread starts elsewhere
local prefix = os.getenv("BENCH_PREFIX")
local nkeys = tonumber(os.getenv("BENCH_KEYS"))
local threads, counter = 0, 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  counter = ((tid or 1) * 7919) % nkeys
end
function request()
  counter = counter + 1
  return wrk.format("GET", prefix .. "get-" .. (counter % nkeys))
end
EOF
cat >"$BENCH_DIR/put.lua" <<'EOF'
-- PUT of 4096 bytes to a new key per request: put-<run>-<thread>-<counter>;
-- the body starts with the key so no two bodies are equal (no dedup shortcut)
local prefix = os.getenv("BENCH_PREFIX")
local run = os.getenv("BENCH_RUN")
local threads, counter = 0, 0
local pad = string.rep("x", 4096)
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  local key = "put-" .. run .. "-" .. tid .. "-" .. counter
  local body = key .. "\n" .. string.sub(pad, 1, 4096 - #key - 1)
  return wrk.format("PUT", prefix .. key, {["Content-Type"] = "application/octet-stream"}, body)
end
EOF

# ---------------------------------------------------------------- 1 GiB PUT/GET + kurad peak RSS
# runs before the 4 KiB load so the peak is not inflated by what that load
# leaves in the store's metadata cache (see docs/benchmarks.md)
# reset kurad's VmHWM to its current RSS (Linux: write 5 to clear_refs) so the
# peak covers only this phase; without it, the peak since start is reported
if echo 5 >"/proc/$KURAD_PID/clear_refs" 2>/dev/null; then hwm_reset=yes; else hwm_reset=no; fi
RSS_BEFORE=$(RSS_KB "$KURAD_PID" VmRSS)
log "1 GiB phase: kurad VmRSS before ${RSS_BEFORE} kB (VmHWM reset: $hwm_reset)"
# also poll VmRSS (bounded by the curl runs) in case the reset is unavailable
(
    peak=0
    while kill -0 "$KURAD_PID" 2>/dev/null && [[ ! -e "$BENCH_DIR/rss.stop" ]]; do
        r=$(RSS_KB "$KURAD_PID" VmRSS || echo 0)
        ((r > peak)) && peak=$r && echo "$peak" >"$BENCH_DIR/rss.peak"
        sleep 0.02
    done
) &
RSS_POLL_PID=$!
huge_put() { # url -> "seconds MiB/s"
    local out code
    out=$(curl -sS -m 600 -o /dev/null -w '%{http_code} %{time_total} %{speed_upload}' -T "$BENCH_DIR/src/huge.bin" "$1")
    read -r code t s <<<"$out"
    [[ $code == 2* ]] || die "1 GiB PUT $1: HTTP $code"
    awk -v t="$t" -v s="$s" 'BEGIN {printf "%.2f %.1f", t, s / 1048576}'
}
huge_get() {
    local out code size
    out=$(curl -sS -m 600 -o /dev/null -w '%{http_code} %{time_total} %{speed_download} %{size_download}' "$1")
    read -r code t s size <<<"$out"
    [[ $code == 200 && $size == $((HUGE_MIB << 20)) ]] || die "1 GiB GET $1: HTTP $code, $size bytes"
    awk -v t="$t" -v s="$s" 'BEGIN {printf "%.2f %.1f", t, s / 1048576}'
}
read -r HP_T_kurad HP_S_kurad <<<"$(huge_put "$K${kpre}huge")"
sample_load
read -r HP_T_nginx HP_S_nginx <<<"$(huge_put "$N${npre}huge")"
sample_load
read -r HG_T_kurad HG_S_kurad <<<"$(huge_get "$K${kpre}huge")"
sample_load
read -r HG_T_nginx HG_S_nginx <<<"$(huge_get "$N${npre}huge")"
sample_load
touch "$BENCH_DIR/rss.stop"
wait "$RSS_POLL_PID" 2>/dev/null || true
RSS_HWM=$(RSS_KB "$KURAD_PID" VmHWM)
RSS_POLL=$(cat "$BENCH_DIR/rss.peak" 2>/dev/null || echo 0)
if [[ $hwm_reset == yes ]]; then RSS_PEAK=$RSS_HWM; else RSS_PEAK=$RSS_POLL; fi
((RSS_POLL > RSS_PEAK)) && RSS_PEAK=$RSS_POLL
RSS_GROWTH=$((RSS_PEAK - RSS_BEFORE))
log "1 GiB: kurad RSS before ${RSS_BEFORE} kB, peak ${RSS_PEAK} kB (VmHWM ${RSS_HWM}, polled ${RSS_POLL})"
hrow "${HUGE_MIB} MiB PUT s (curl)" "$HP_T_kurad" "$HP_T_nginx"
hrow "${HUGE_MIB} MiB PUT MiB/s" "$HP_S_kurad" "$HP_S_nginx"
hrow "${HUGE_MIB} MiB GET s (curl)" "$HG_T_kurad" "$HG_T_nginx"
hrow "${HUGE_MIB} MiB GET MiB/s" "$HG_S_kurad" "$HG_S_nginx"
HROWS+=("kurad RSS before / peak MiB|$(awk -v a="$RSS_BEFORE" -v b="$RSS_PEAK" 'BEGIN {printf "%.1f / %.1f", a / 1024, b / 1024}')|-|-")
HROWS+=("kurad peak RSS growth MiB|$(awk -v g="$RSS_GROWTH" 'BEGIN {printf "%.1f", g / 1024}')|-|-")

# ---------------------------------------------------------------- 4 KiB GET
for srv in kurad nginx; do
    if [[ $srv == kurad ]]; then base=$K; pre=$kpre; else base=$N; pre=$npre; fi
    export BENCH_PREFIX=$pre BENCH_KEYS=$KEYS
    log "4 KiB GET $srv: warm-up $WARMUP then $DURATION, $CONNS connections"
    run_wrk "get4k-warmup-$srv" "$CONNS" "$WARMUP" "$base" "$BENCH_DIR/get.lua"
    run_wrk "get4k-$srv" "$CONNS" "$DURATION" "$base" "$BENCH_DIR/get.lua"
    declare "G_RPS_$srv=$W_RPS" "G_P50_$srv=$W_P50" "G_P99_$srv=$W_P99"
done
row "4 KiB GET req/s (c=$CONNS)" "$G_RPS_kurad" "$G_RPS_nginx"
row "4 KiB GET p50 us" "$G_P50_kurad" "$G_P50_nginx"
row "4 KiB GET p99 us" "$G_P99_kurad" "$G_P99_nginx"

# ---------------------------------------------------------------- 4 KiB PUT
for srv in kurad nginx; do
    if [[ $srv == kurad ]]; then base=$K; pre=$kpre; else base=$N; pre=$npre; fi
    export BENCH_PREFIX=$pre BENCH_RUN=$$
    log "4 KiB PUT $srv: $DURATION, $CONNS connections, unique keys"
    run_wrk "put4k-$srv" "$CONNS" "$DURATION" "$base" "$BENCH_DIR/put.lua"
    declare "P_RPS_$srv=$W_RPS" "P_P50_$srv=$W_P50" "P_P99_$srv=$W_P99"
done
# spot check: a key the PUT run wrote reads back on both
for srv in "$K$kpre" "$N$npre"; do
    code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "${srv}put-$$-1-5")
    [[ $code == 200 ]] || die "PUT spot check ${srv}put-$$-1-5: HTTP $code"
done
row "4 KiB PUT req/s (c=$CONNS)" "$P_RPS_kurad" "$P_RPS_nginx"
row "4 KiB PUT p50 us" "$P_P50_kurad" "$P_P50_nginx"
row "4 KiB PUT p99 us" "$P_P99_kurad" "$P_P99_nginx"

# ---------------------------------------------------------------- 64 MiB GET
for srv in kurad nginx; do
    if [[ $srv == kurad ]]; then url="$K${kpre}big64"; else url="$N${npre}big64"; fi
    log "64 MiB GET $srv: warm-up $WARMUP then $DURATION, $BIG_CONNS connections"
    run_wrk "get64m-warmup-$srv" "$BIG_CONNS" "$WARMUP" "$url"
    run_wrk "get64m-$srv" "$BIG_CONNS" "$DURATION" "$url"
    declare "B_MIBS_$srv=$W_MIBS" # wrk Transfer/sec: counts partial responses too
done
row "64 MiB GET MiB/s (c=$BIG_CONNS)" "$B_MIBS_kurad" "$B_MIBS_nginx"

ROWS+=("${HROWS[@]}")

# ---------------------------------------------------------------- /up latency
log "/up latency kurad, nginx static up.json: $UP_DURATION, $UP_CONNS connection(s)"
run_wrk "up-kurad" "$UP_CONNS" "$UP_DURATION" "$K/up"
U_P50_kurad=$W_P50 U_P99_kurad=$W_P99 U_RPS_kurad=$W_RPS
run_wrk "up-nginx" "$UP_CONNS" "$UP_DURATION" "$N/up.json"
U_P50_nginx=$W_P50 U_P99_nginx=$W_P99 U_RPS_nginx=$W_RPS
row "/up (nginx: static file) p50 us (c=$UP_CONNS)" "$U_P50_kurad" "$U_P50_nginx"
row "/up (nginx: static file) p99 us" "$U_P99_kurad" "$U_P99_nginx"
row "/up (nginx: static file) req/s" "$U_RPS_kurad" "$U_RPS_nginx"

# ---------------------------------------------------------------- report
sample_load
RSS_END=$(RSS_KB "$KURAD_PID" VmRSS)
ROWS+=("kurad RSS idle / end of run MiB|$(awk -v a="$RSS_IDLE" -v b="$RSS_END" 'BEGIN {printf "%.1f / %.1f", a / 1024, b / 1024}')|-|-")
kill -0 "$KURAD_PID" 2>/dev/null || die "kurad died during the run (see $BENCH_DIR/kurad.log)"
echo
echo "kurad vs nginx $(nginx -v 2>&1 | sed 's/.*\///') — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS, DURATION=$DURATION"
echo "kurad: --durability always (fsync before ack); nginx: WebDAV PUT, no fsync; $NGINX_WORKERS workers"
echo "load average (1/5/15 min) sampled during the run: $(printf '%s; ' "${LOAD_SAMPLES[@]}")"
echo
{
    echo "metric|kurad|nginx|kurad/nginx"
    printf '%s\n' "${ROWS[@]}"
} | awk -F'|' '{ printf "%-42s %14s %14s %12s\n", $1, $2, $3, $4 }'
echo
echo "targets:"
awk -v kr="$G_RPS_kurad" -v nr="$G_RPS_nginx" -v k99="$G_P99_kurad" -v n99="$G_P99_nginx" \
    -v kp="$P_RPS_kurad" -v np="$P_RPS_nginx" -v kb="$B_MIBS_kurad" -v nb="$B_MIBS_nginx" \
    -v g="$RSS_GROWTH" -v pk="$RSS_PEAK" -v up="$U_P50_kurad" 'function v(ok) { return ok ? "met" : "NOT met" }
BEGIN {
    printf "  4 KiB GET >= 1.0x nginx req/s:       %.2fx  %s\n", kr / nr, v(kr >= nr)
    printf "  4 KiB GET p99 <= nginx p99:          %s vs %s us  %s\n", k99, n99, v(k99 + 0 <= n99 + 0)
    printf "  4 KiB PUT >= 1.0x nginx req/s:       %.2fx  %s\n", kp / np, v(kp >= np)
    printf "  64 MiB GET >= 0.9x nginx MiB/s:      %.2fx  %s\n", kb / nb, v(kb >= 0.9 * nb)
    printf "  1 GiB peak RSS < 64 MiB:             peak %.1f MiB (growth %.1f MiB)  %s\n", pk / 1024, g / 1024, v(pk < 65536)
    printf "  /up p50 < 100 us:                    %s us  %s\n", up, v(up + 0 < 100)
}'
if ((${#ERRORS[@]})); then
    echo "errors: ${ERRORS[*]}"
fi
