#!/usr/bin/env bash
# stop-rig.sh RIG_DIR [--clean] — stop everything start-rig.sh started in RIG_DIR (by pid files only).
set -uo pipefail
RIG_DIR=${1:?usage: stop-rig.sh RIG_DIR [--clean]}
cd "$RIG_DIR" || exit 0
alive() { # zombie-aware: in containers whose PID 1 never reaps, a killed child stays <defunct>
  local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ -n "$st" && "$st" != Z* ]]
}
pids=()
[ -s run/dovecot/master.pid ] && pids+=("$(cat run/dovecot/master.pid)")
[ -s postfix/spool/pid/master.pid ] && pids+=("$(tr -d ' ' < postfix/spool/pid/master.pid)")
# SIGTERM to Dovecot's master (what 'dovecot stop' does, minus its wait loop, which runs into its 3 s
# timeout when the master is left a zombie); Postfix's own stop returns at once
[ ${#pids[@]} -gt 0 ] && [ -s run/dovecot/master.pid ] && alive "${pids[0]}" && kill "${pids[0]}"
[ -f postfix/main.cf ] && postfix -c "$RIG_DIR/postfix" stop >/dev/null 2>&1
for f in run/oidc.pid run/sink.pid run/graph.pid; do
  [ -s "$f" ] || continue
  p=$(cat "$f"); pids+=("$p"); alive "$p" && kill "$p"
done
for _ in $(seq 100); do
  left=(); for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
  [ ${#left[@]} -eq 0 ] && break; sleep 0.05
done
for p in "${left[@]:-}"; do [ -n "$p" ] && alive "$p" && { echo "[stop-rig] force-killing $p" >&2; kill -9 "$p"; }; done
rm -f run/oidc.pid run/sink.pid run/graph.pid
[ "${2:-}" = --clean ] && { cd /; rm -rf "$RIG_DIR"; }
echo "[stop-rig] stopped" >&2
