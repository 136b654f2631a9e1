#!/usr/bin/env bash
# Installs schemathesis (property-based testing of an HTTP API against its OpenAPI
# document) into a venv under target/ (idempotent). Used by .ci/run and by the
# api_contract integration test.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=4.32.5
VENV=target/schemathesis-venv
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" == *" $VERSION" ]]; then
  exit 0
fi
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
echo "installed schemathesis $VERSION into $VENV"
