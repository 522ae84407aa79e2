# Shared by bench/run, bench/instructions and bench/soak (sourced, not run).
# Each script sets WORK (a temp dir) and PIDS (what to stop on exit) first.

# Install what is missing: `need_tools command:debian-package ...`.
need_tools() {
  local need=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# Stop everything the script started and remove its files.
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # $1 port, $2 tries of 0.1 s (100)
  for _ in $(seq 1 "${2:-100}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# A P-256 certificate for 127.0.0.1 and localhost: $WORK/cert.pem, $WORK/key.pem
# (readable by nginx's workers, which run as nobody).
self_signed() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  chmod 644 "$WORK/key.pem"
}

# A private redis-server on $1 that keeps nothing on disk.
start_redis() { # $1 port, rest: a command prefix (taskset …)
  local port=$1; shift
  "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port"
}

# nginx as the bench's reference: `nginx_config PORT UPSTREAM_PORT WORKERS
# [directive...]` writes $WORK/nginx.conf. TLS proxy_pass with a keep-alive
# upstream pool, access log off. Both proxies apply the same suite order
# (tls.rs's, Mozilla's), so each client meets the same cipher behind either:
# left to its default, nginx follows the client, and wrk lists AES-256 first.
nginx_config() {
  local port=$1 up=$2 workers=$3; shift 3
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
$(printf '%s\n' "$@")
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream dashboard { server 127.0.0.1:$up; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$port ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    location / {
      proxy_pass http://dashboard;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
EOF
}

# gatehouse's config for a bench: `gatehouse_config NAME PORT STORE_URL UPSTREAM_PORT THREADS`
# writes $WORK/NAME.toml. Two-factor required, access log and metrics off.
gatehouse_config() {
  cat >"$WORK/$1.toml" <<EOF
[server]
listen = ["127.0.0.1:$2"]
hsts_max_age = "disabled"
worker_threads = $5
[server.tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[server.limits]
idle_timeout = "10m"
# The HTTP/1.1 keep-alive timeout, as nginx's keepalive_timeout in bench/run:
# at the default 10 s, idle connections opened more than 10 s before RSS is
# read (most of them, when opening 10 000 takes a minute on a busy machine)
# are already closed and the reading undercounts.
header_read_timeout = "300s"
max_connections = 40000
max_connections_per_ip = 40000
[upstream]
url = "http://127.0.0.1:$4"
pool_max_idle = 1024
[store]
url = "$3"
secret_key_file = "$WORK/$1.key"
[logging]
level = "warn"
access_log = false
[metrics]
listen = "${6:-disabled}"
[two_factor]
mode = "required"
[password]
change_path = ""
EOF
}
