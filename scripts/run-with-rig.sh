#!/usr/bin/env bash
# run-with-rig.sh CMD... — build, start the loopback rig in a fresh temp dir, run CMD with the
# rig's RIG_* variables exported (and SSL_CERT_FILE pointing to the rig's CA), stop the rig.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# compile first: with SSL_CERT_FILE set to the rig CA, cargo could not reach crates.io
cargo build --workspace --all-targets --quiet
cargo test --workspace --no-run --quiet 2>/dev/null
RIG_DIR=$(mktemp -d /tmp/rig.XXXXXX)
trap 'scripts/rig/stop-rig.sh "$RIG_DIR" --clean' EXIT
scripts/rig/start-rig.sh "$RIG_DIR" >/dev/null
set -a; . "$RIG_DIR/rig.env"; set +a
export SSL_CERT_FILE=$RIG_CA_FILE
"$@"
