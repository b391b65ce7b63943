#!/usr/bin/env bash
# pmxcfs.sh — a real Proxmox cluster file system on this machine: pmxcfs built from the
# pve-cluster source (../shared/real-host/pve-cluster beside the checkout, or PVE_CLUSTER_SRC),
# N nodes, each in its own network, mount and UTS namespace (hostname pveI, 10.79.0.I on a
# bridge that lives in a namespace of its own), with Debian's corosync (knet, secauth,
# votequorum) and /etc/pve mounted per node. The host's /etc, /var and network are untouched:
# each node has overlays over /etc and /var, tmpfs /run and /dev/shm; nothing leaves the box.
#
#   pmxcfs.sh deps                 install corosync, fuse and pmxcfs's build dependencies
#   pmxcfs.sh build                build pmxcfs into the cache (once per source), print its path
#   pmxcfs.sh up [N]               N nodes (default 3): namespaces, corosync, pmxcfs, quorate, and
#                                  the directories a PVE node has (priv/lock, nodes/pveI, ...)
#   pmxcfs.sh forward PORT...      make the host's 127.0.0.1:PORT reachable as 127.0.0.1:PORT in
#                                  every node (the test rig; socat through a unix socket)
#   pmxcfs.sh x I CMD...           run CMD in node I (its namespaces; /etc/pve at its path)
#   pmxcfs.sh root I               the host-side path of node I's root (/proc/<pid>/root)
#   pmxcfs.sh port-mode I PORT normal|hang|delay:S   node I's end of a forwarded port
#   pmxcfs.sh stop-corosync I | kill-corosync I | start-corosync I
#   pmxcfs.sh link-down I | link-up I      cut / restore node I's port on the bridge
#   pmxcfs.sh wait-quorate "I J.." [S]     until those nodes' pmxcfs say quorate
#   pmxcfs.sh status
#   pmxcfs.sh teardown             stop everything it started (by pid), delete the namespaces and
#                                  the state dir (logs kept in $PMX_STATE.logs)
#
# Environment: PMX_STATE (state dir, default /tmp/oxnotify-pmxcfs; one cluster per state dir,
# namespaces named after it), OXNOTIFY_TEST_CACHE (default /var/cache/oxnotify-test: the built
# pmxcfs), PVE_CLUSTER_SRC. Needs root, /dev/fuse, the group www-data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SELF=$(readlink -f "$0")
STATE=${PMX_STATE:-/tmp/oxnotify-pmxcfs}
CACHE=${OXNOTIFY_TEST_CACHE:-/var/cache/oxnotify-test}
SRC=${PVE_CLUSTER_SRC:-$ROOT/../shared/real-host/pve-cluster}
NET=10.79.0
# namespace names from the state dir: two clusters with two state dirs never collide
PFX=oxp$(printf '%s' "$STATE" | sha256sum | cut -c1-6)

die() { echo "pmxcfs.sh: $*" >&2; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
nodes() { cat "$STATE/nodes" 2>/dev/null || echo 0; }
holder() { cat "$STATE/holder$1.pid" 2>/dev/null || die "node $1 is not up"; }
nx() { local i=$1; shift; nsenter -t "$(holder "$i")" -n -m -u -- "$@"; }
root_of() { echo "/proc/$(holder "$1")/root"; }
wait_for() { # seconds command... : poll every 50 ms
  local end=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s%N)" -lt "$end" ] || return 1; sleep 0.05; done
}

cmd_deps() {
  local need=() p
  for p in corosync fuse libcorosync-common-dev libcpg-dev libquorum-dev libcmap-dev libqb-dev libfuse-dev \
           libsqlite3-dev libglib2.0-dev librrd-dev pkg-config gcc make iproute2 util-linux socat; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
}

binary() { # the cached binary for this source
  local key
  key=$(cd "$SRC" && cat SOURCES src/pmxcfs/Makefile src/pmxcfs/*.c src/pmxcfs/*.h | sha256sum | cut -c1-12)
  echo "$CACHE/pmxcfs-$key/pmxcfs"
}

cmd_build() {
  [ -d "$SRC/src/pmxcfs" ] || die "no pmxcfs source at $SRC (PVE_CLUSTER_SRC)"
  local bin dir
  bin=$(binary); dir=$(dirname "$bin")
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.pmxcfs-build.lock"; flock 8
  if [ ! -x "$bin" ]; then
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    cp -a "$SRC/src/pmxcfs/." "$dir.tmp/"
    make -C "$dir.tmp" -j2 pmxcfs >"$dir.tmp/build.log" 2>&1 || { tail -20 "$dir.tmp/build.log" >&2; die "pmxcfs build failed"; }
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  flock -u 8
  echo "$bin"
}

# runs in node I's fresh mount+UTS namespace (inside its network namespace): its own /etc, /var,
# /run and /dev/shm, its name, its hosts file; then it holds the namespaces until killed
node_init() {
  local i=$1 n d=$STATE/node$1 j
  n=$(nodes)
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc.up,workdir=$d/etc.wk" /etc
  mount -t overlay overlay -o "lowerdir=/var,upperdir=$d/var.up,workdir=$d/var.wk" /var
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  hostname "pve$i"; echo "pve$i" >/etc/hostname
  { echo "127.0.0.1 localhost"; for j in $(seq "$n"); do echo "$NET.$j pve$j"; done; } >/etc/hosts
  rm -f /etc/corosync/corosync.conf /etc/corosync/authkey
  rm -rf /var/lib/pve-cluster /var/lib/corosync
  mkdir -p /etc/corosync /var/lib/corosync /var/lib/pve-cluster /run/pve-cluster /etc/pve
  touch "$d/ready"
  exec sleep infinity
}

corosync_conf() { # the shape `pvecm create` writes
  local n=$1 j
  printf 'logging {\n  to_syslog: no\n  to_stderr: yes\n  timestamp: hires\n}\nnodelist {\n'
  for j in $(seq "$n"); do printf '  node {\n    name: pve%s\n    nodeid: %s\n    quorum_votes: 1\n    ring0_addr: %s.%s\n  }\n' "$j" "$j" "$NET" "$j"; done
  printf '}\nquorum {\n  provider: corosync_votequorum\n}\ntotem {\n  cluster_name: oxnotify-test\n  config_version: 1\n'
  printf '  interface {\n    linknumber: 0\n  }\n  ip_version: ipv4-6\n  link_mode: passive\n  secauth: on\n  version: 2\n}\n'
}

start_corosync() {
  local i=$1
  alive "$(cat "$STATE/corosync$i.pid" 2>/dev/null)" && return 0
  nsenter -t "$(holder "$i")" -n -m -u -- corosync -f </dev/null >>"$STATE/node$i/corosync.log" 2>&1 &
  echo $! >"$STATE/corosync$i.pid"
  wait_for 15 nx "$i" corosync-cmapctl -g totem.cluster_name || die "corosync $i did not come up"
}

stop_pid() { # pidfile [signal]: the process, by its pid; SIGKILL after 10 s
  local p
  p=$(cat "$1" 2>/dev/null || true)
  if alive "$p"; then
    kill "-${2:-TERM}" "$p" 2>/dev/null || true
    wait_for 10 eval "! kill -0 $p" || { kill -KILL "$p" 2>/dev/null || true; wait_for 5 eval "! kill -0 $p" || true; }
  fi
  rm -f "$1"
}

start_pmxcfs() {
  local i=$1 bin p
  bin=$(binary); [ -x "$bin" ] || die "pmxcfs not built (pmxcfs.sh build)"
  nsenter -t "$(holder "$i")" -n -m -u -- "$bin" -f </dev/null >>"$STATE/node$i/pmxcfs.log" 2>&1 &
  p=$!; echo "$p" >"$STATE/pmxcfs$i.pid"
  # ready: .members answers through the node's /etc/pve (about 1 s after start)
  wait_for 20 test -r "/proc/$p/root/etc/pve/.members" || { tail -20 "$STATE/node$i/pmxcfs.log" >&2; die "pmxcfs $i did not mount /etc/pve"; }
}

quorate() { grep -q '"quorate": 1' "$(root_of "$1")/etc/pve/.members" 2>/dev/null; }
cmd_wait_quorate() { local i; for i in $1; do wait_for "${2:-30}" quorate "$i" || die "node $i not quorate after ${2:-30} s"; done; }

cmd_up() {
  local n=${1:-3} i r
  [ -e "$STATE/nodes" ] && die "$STATE is in use (pmxcfs.sh teardown first)"
  [ -c /dev/fuse ] || die "/dev/fuse missing"
  getent group www-data >/dev/null || die "group www-data missing (pmxcfs needs it)"
  cmd_build >/dev/null
  mkdir -p "$STATE"; chmod 0700 "$STATE"; echo "$n" >"$STATE/nodes"
  ip netns add "${PFX}sw"; ip -n "${PFX}sw" link set lo up
  ip -n "${PFX}sw" link add br0 type bridge; ip -n "${PFX}sw" link set br0 up
  for i in $(seq "$n"); do
    mkdir -p "$STATE/node$i"/{etc.up,etc.wk,var.up,var.wk}
    ip netns add "${PFX}n$i"
    ip -n "${PFX}sw" link add "v$i" type veth peer name eth0 netns "${PFX}n$i"
    ip -n "${PFX}sw" link set "v$i" master br0 up
    ip -n "${PFX}n$i" link set lo up
    ip -n "${PFX}n$i" addr add "$NET.$i/24" dev eth0
    ip -n "${PFX}n$i" link set eth0 up
    nsenter --net="/run/netns/${PFX}n$i" -- unshare --mount --uts --propagation private -- \
      env PMX_STATE="$STATE" "$SELF" _node_init "$i" </dev/null >"$STATE/node$i/holder.log" 2>&1 &
    echo $! >"$STATE/holder$i.pid"
    wait_for 10 test -e "$STATE/node$i/ready" || die "node $i: $(cat "$STATE/node$i/holder.log")"
  done
  corosync_conf "$n" >"$STATE/corosync.conf"
  corosync-keygen -k "$STATE/authkey" >/dev/null 2>&1
  for i in $(seq "$n"); do
    nx "$i" install -m 0644 "$STATE/corosync.conf" /etc/corosync/corosync.conf
    nx "$i" install -m 0400 "$STATE/authkey" /etc/corosync/authkey
  done
  for i in $(seq "$n"); do start_corosync "$i"; done
  for i in $(seq "$n"); do start_pmxcfs "$i"; done
  cmd_wait_quorate "$(seq -s ' ' "$n")" 60
  # a fresh pmxcfs database is empty; pve-manager creates these on a real node
  r="$(root_of 1)/etc/pve"
  mkdir -p "$r/priv/lock" "$r/nodes" "$r/ha" "$r/firewall" "$r/mapping"
  for i in $(seq "$n"); do mkdir -p "$r/nodes/pve$i/priv" "$r/nodes/pve$i/qemu-server" "$r/nodes/pve$i/lxc"; done
  echo "pmxcfs: $n nodes up and quorate (state $STATE)"
}

cmd_forward() {
  local port i p
  for port in "$@"; do
    socat "UNIX-LISTEN:$STATE/fwd-$port.sock,fork,unlink-early" "TCP:127.0.0.1:$port" </dev/null >>"$STATE/socat.log" 2>&1 &
    echo $! >"$STATE/fwd-$port-host.pid"
    wait_for 5 test -S "$STATE/fwd-$port.sock" || die "forwarder $port"
    for i in $(seq "$(nodes)"); do
      nsenter --net="/run/netns/${PFX}n$i" -- socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
        "UNIX-CONNECT:$STATE/fwd-$port.sock" </dev/null >>"$STATE/socat.log" 2>&1 &
      p=$!; echo "$p" >"$STATE/fwd-$port-n$i.pid"
      wait_for 5 nx "$i" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || die "forwarder $port in node $i"
    done
  done
}

# node I's end of a forwarded port: normal, hang (accepts, never answers: a provider that hangs),
# delay:S (each connection waits S seconds before it reaches the host's port)
cmd_port_mode() {
  local i=$1 port=$2 mode=$3 f=$STATE/fwd-$2-n$1.pid to
  [ -S "$STATE/fwd-$port.sock" ] || die "port $port is not forwarded"
  stop_pid "$f"
  case "$mode" in
    normal) to="UNIX-CONNECT:$STATE/fwd-$port.sock" ;;
    hang) to="SYSTEM:exec sleep 3600" ;;
    delay:*) to="SYSTEM:sleep ${mode#delay:}; exec socat - UNIX-CONNECT\:$STATE/fwd-$port.sock" ;;
    *) die "port mode: normal, hang or delay:SECONDS" ;;
  esac
  nsenter --net="/run/netns/${PFX}n$i" -- socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "$to" \
    </dev/null >>"$STATE/socat.log" 2>&1 &
  echo $! >"$f"
  wait_for 5 nx "$i" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || die "port $port in node $i"
}

cmd_status() {
  local i
  for i in $(seq "$(nodes)"); do
    echo "== pve$i: holder $(cat "$STATE/holder$i.pid" 2>/dev/null || echo -) corosync $(cat "$STATE/corosync$i.pid" 2>/dev/null || echo -) pmxcfs $(cat "$STATE/pmxcfs$i.pid" 2>/dev/null || echo -)"
    cat "$(root_of "$i")/etc/pve/.members" 2>/dev/null | tr -d '\n' | cut -c1-200; echo
  done
}

cmd_teardown() {
  local n i f
  n=$(nodes)
  [ -d "$STATE" ] || return 0
  for f in "$STATE"/fwd-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
  for i in $(seq "$n" -1 1); do stop_pid "$STATE/pmxcfs$i.pid"; done
  for i in $(seq "$n"); do stop_pid "$STATE/corosync$i.pid"; done
  # the FUSE and overlay mounts live only in the holders' mount namespaces: gone with them
  for i in $(seq "$n"); do stop_pid "$STATE/holder$i.pid"; done
  for i in $(seq "$n"); do ip netns del "${PFX}n$i" 2>/dev/null || true; done
  ip netns del "${PFX}sw" 2>/dev/null || true
  rm -rf "$STATE.logs"; mkdir -p "$STATE.logs"
  for i in $(seq "$n"); do for f in pmxcfs corosync; do
    [ -f "$STATE/node$i/$f.log" ] && cp "$STATE/node$i/$f.log" "$STATE.logs/pve$i-$f.log"; done; done
  rm -rf "$STATE"
}

[ "$(id -u)" = 0 ] || die "must run as root"
cmd=${1:-}; shift || true
case "$cmd" in
  deps) cmd_deps ;;
  build) cmd_build ;;
  up) cmd_up "$@" ;;
  forward) cmd_forward "$@" ;;
  x) i=$1; shift; nx "$i" "$@" ;;
  root) root_of "$1" ;;
  start-corosync) start_corosync "$1" ;;
  stop-corosync) stop_pid "$STATE/corosync$1.pid" ;;
  kill-corosync) stop_pid "$STATE/corosync$1.pid" KILL ;;
  link-down) ip -n "${PFX}sw" link set "v$1" down ;;
  link-up) ip -n "${PFX}sw" link set "v$1" up ;;
  wait-quorate) cmd_wait_quorate "$@" ;;
  port-mode) cmd_port_mode "$@" ;;
  status) cmd_status ;;
  teardown) cmd_teardown ;;
  _node_init) node_init "$1" ;;
  *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
