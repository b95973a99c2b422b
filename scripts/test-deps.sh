#!/usr/bin/env bash
# What only the test suite needs beyond scripts/deps.sh: schemathesis (from PyPI, pinned) in a
# virtual environment of its own under target/, which the OpenAPI test runs against a live
# stack. Kept when it is there already.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${HOSTING_SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-$ROOT/target}/schemathesis}
VERSION=4.32.5

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "installing: python3 python3-venv"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
echo "installing schemathesis $VERSION into $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
"$VENV/bin/schemathesis" --version
