#!/usr/bin/env bash
# Extracts promtool from Debian's prometheus package into target/promtool (idempotent).
# Nothing is installed system-wide and no Prometheus runs. Used by tests/alerts.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=target/promtool
mkdir -p target
# Tests run side by side: one extracts, the others wait for it.
exec 9>target/promtool.lock
flock 9
if "$DIR/usr/bin/promtool" --version >/dev/null 2>&1; then
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# A machine whose package lists were never fetched needs them first.
(cd "$WORK" && { apt-get download prometheus >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
dpkg-deb -x "$WORK"/prometheus_*.deb "$WORK/root"
rm -rf "$DIR"
mv "$WORK/root" "$DIR"
echo "extracted $("$DIR/usr/bin/promtool" --version 2>&1 | head -1) into $DIR"
