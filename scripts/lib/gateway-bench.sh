# Helpers of scripts/bench-gateway (sourced, not run): tools, ports, the
# canned upstream, cortex and nginx set up the same way. The sourcing
# script defines `log`, `die`, `tmp` (a scratch folder) and `pids`
# (processes to stop on exit).

# need_debs PKG...: install the Debian packages whose command is missing.
need_debs() {
  local missing=() p
  for p in "$@"; do command -v "$p" >/dev/null || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]} (Debian packages)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y "${missing[@]}" >&2 \
    || { $sudo apt-get update >&2 && $sudo apt-get install -y "${missing[@]}" >&2; }
  for p in "${missing[@]}"; do command -v "$p" >/dev/null || die "$p is not installed"; done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# start_upstream: run the canned upstream; sets UP (host:port), UPSTREAM_PID.
start_upstream() {
  "${UPSTREAM_BIN:-target/release/examples/canned_upstream}" 127.0.0.1:0 > "$tmp/upstream.log" 2>&1 &
  UPSTREAM_PID=$!
  pids+=("$UPSTREAM_PID")
  wait_for 10 grep -q '^listening ' "$tmp/upstream.log" \
    || die "canned_upstream did not start: $(cat "$tmp/upstream.log")"
  UP="$(sed -n 's/^listening http:\/\///p' "$tmp/upstream.log")"
}

# cortex_config FILE PORT METRICS_PORT: one neuron, the canned upstream;
# admission raised so that every stream of the load shape is let through
# at once (the defaults queue past 256 per model, to protect a neuron).
cortex_config() {
  cat > "$1" <<CONF
[gateway]
listen = "127.0.0.1:$2"
metrics_listen = "127.0.0.1:$3"
poll_interval = "1s"

[limits]
max_in_flight_per_model = 8192
max_in_flight_total = 8192

[[neurons]]
name = "canned"
endpoint = "http://$UP"
CONF
}

# nginx_config FILE PORT: proxy_pass to the canned upstream with keep-alive
# on both sides and buffering off, workers as NGINX_WORKERS (default auto).
# Temp and pid files go under $tmp/nginx.
nginx_config() {
  local file=$1 port=$2
  mkdir -p "$tmp/nginx"
  cat > "$file" <<CONF
worker_processes ${NGINX_WORKERS:-auto};
worker_rlimit_nofile 65536;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    # nginx closes keep-alive connections after 1000 requests by default,
    # on both sides; cortex and the upstream never do.
    keepalive_requests 1000000;
    upstream canned {
        server $UP;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://canned;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
}

# cpu_ticks PID...: CPU time (utime + stime, clock ticks) of processes and
# their threads, and of their children (nginx's workers).
cpu_ticks() {
  local total=0 p task f
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    for task in /proc/"$p"/task/*; do
      # Fields after the ")" that ends the command name: utime is the 12th.
      f=$(sed 's/.*) //' "$task/stat" 2>/dev/null) || continue
      read -r -a a <<< "$f"
      total=$(( total + a[11] + a[12] ))
    done
  done
  echo "$total"
}

# rss_kib PID...: resident memory (KiB) of processes and their children.
rss_kib() {
  local total=0 p v
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}
