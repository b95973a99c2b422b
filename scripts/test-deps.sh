#!/usr/bin/env bash
# What only the test suite needs beyond scripts/deps.sh: Prometheus (Debian's), which the
# metrics test scrapes the services with; Chromium (Debian's) and playwright-core (npm, its
# version pinned, under target/playwright), which the dashboard test drives; and schemathesis
# (from PyPI, its version pinned) in a virtual environment of its own under target/, which the
# OpenAPI test runs against a live stack. Kept when they are there already.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
VENV=${HOSTING_SCHEMATHESIS_VENV:-$TARGET/schemathesis}
VERSION=4.32.5
# The newest playwright-core that runs on Debian 12's Node.js 18.
PLAYWRIGHT_VERSION=1.57.0
PLAYWRIGHT=${HOSTING_PLAYWRIGHT_DIR:-$TARGET/playwright}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/bin/prometheus ]; then
  echo "installing: prometheus"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
  echo "installing:$missing"
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
installed=$(node -p "require('$PLAYWRIGHT/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
  echo "installing playwright-core $PLAYWRIGHT_VERSION into $PLAYWRIGHT"
  mkdir -p "$PLAYWRIGHT"
  npm install --silent --no-audit --no-fund --prefix "$PLAYWRIGHT" "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $VERSION"; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "installing: python3 python3-venv"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
echo "installing schemathesis $VERSION into $VENV"
# Only a virtual environment (or nothing) is replaced: never a directory it did not make.
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
  echo "error: $VENV exists and is not a virtual environment; remove it or set HOSTING_SCHEMATHESIS_VENV" >&2
  exit 1
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
"$VENV/bin/schemathesis" --version
