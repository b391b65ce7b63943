#!/usr/bin/env bash
# build-debs.sh VERSION OUTDIR — build the Debian packages of this checkout (the tracked and
# untracked-but-not-ignored files, as `git ls-files` lists them) as VERSION into OUTDIR, the way
# the package tests install them: dpkg-buildpackage -b in a copy of the sources, the cargo build
# cache shared through CARGO_TARGET_DIR (default: the checkout's target/). OUTDIR gets the .debs,
# the .changes and build.log. OXNOTIFY_CARGO_LOCK=FILE serializes the build through flock on FILE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
v=${1:?usage: build-debs.sh VERSION OUTDIR}
out=${2:?usage: build-debs.sh VERSION OUTDIR}
mkdir -p "$out"; out=$(cd "$out" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOCK=()
[ -n "${OXNOTIFY_CARGO_LOCK:-}" ] && LOCK=(flock "$OXNOTIFY_CARGO_LOCK" nice)
# dpkg-buildpackage writes the packages beside the source directory: a private parent
parent=$(mktemp -d /tmp/oxdeb.XXXXXX)
trap 'rm -rf "$parent"' EXIT
src=$parent/src
mkdir -p "$src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src")
if [ "$v" != "$(cd "$src" && dpkg-parsechangelog -S Version)" ]; then
  sed -i "1s/(.*)/($v)/" "$src/debian/changelog"
fi
# the rig CA must not replace the system trust store for cargo
if ! (cd "$src" && env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "${LOCK[@]}" dpkg-buildpackage -us -uc -b) \
     >"$out/build.log" 2>&1; then
  tail -30 "$out/build.log" >&2
  echo "build-debs.sh: dpkg-buildpackage $v failed (log: $out/build.log)" >&2
  exit 1
fi
mv "$parent"/*.deb "$parent"/*.changes "$parent"/*.buildinfo "$out"/
