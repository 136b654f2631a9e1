#!/usr/bin/env bash
# Installs the official PostHog Python SDK into a venv under target/ (idempotent).
# Used by .ci/run and by the posthog_sdk integration test.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=7.91.1
VENV=target/posthog-sdk-venv
if "$VENV/bin/python" -c "import posthog, sys; sys.exit(posthog.VERSION != '$VERSION')" 2>/dev/null; then
  exit 0
fi
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "posthog==$VERSION"
echo "installed posthog $VERSION into $VENV"
