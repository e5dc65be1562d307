# Shared by scripts/*: install and start local Redis servers on free loopback
# ports. Source it; every server started is stopped by `redis_cleanup`.

REDIS_PIDS=()
REDIS_DIRS=()

# Installs redis-server and redis-cli with apt-get when missing.
ensure_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  echo "==> installing redis-server (apt-get)" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >&2
  # The Debian package may start a system service on 6379; we never use it.
}

# Prints N free loopback ports whose +10000 (cluster bus) ports are free too.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1]); out = []
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while len(out) < n:
    p = random.randint(20000, 29999)
    if p not in out and free(p) and free(p + 10000):
        out.append(p)
print(" ".join(map(str, out)))
PY
}

# start_redis PORT [extra redis-server args...]: starts a server, waits for PING.
start_redis() {
  local port=$1; shift
  local dir; dir=$(mktemp -d /tmp/dtq-redis.XXXXXX)
  REDIS_DIRS+=("$dir")
  # No inherited stdout/stderr: a server must never hold the caller's pipe open.
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
  REDIS_PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "redis-server on port $port did not start; log:" >&2
  cat "$dir/redis.log" >&2
  return 1
}

# start_cluster PORT PORT PORT: a 3-master Redis Cluster; sets CLUSTER_URL.
# (Not meant for $(...): the servers must be recorded in this shell's
# REDIS_PIDS so that redis_cleanup stops them.)
start_cluster() {
  local p
  for p in "$@"; do
    start_redis "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
      --cluster-node-timeout 5000 --repl-diskless-sync-delay 0 >&2
  done
  local nodes=()
  for p in "$@"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 200); do
    if redis-cli -p "$1" cluster info | grep -q 'cluster_state:ok'; then
      CLUSTER_URL="redis-cluster://127.0.0.1:$1?node=127.0.0.1:$2&node=127.0.0.1:$3"
      return 0
    fi
    sleep 0.05
  done
  echo "the cluster did not reach cluster_state:ok" >&2
  return 1
}

redis_cleanup() {
  local pid
  for pid in "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local d
  for d in "${REDIS_DIRS[@]}"; do rm -rf "$d"; done
}
