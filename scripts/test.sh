#!/usr/bin/env bash
# Install the test dependencies, make sure redis-server exists, then run every check and the
# whole test suite. This is what CI runs (.ci/run), and what a new contributor runs.
# Extra arguments go to pytest, e.g. scripts/test.sh -k redis -x
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing the Debian package redis-server"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  # Keep the package from starting a system-wide server: the tests start their own.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  if [ "$created_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

echo "== ruff"
python -m ruff check proxystore integrations tests examples benchmarks
python -m ruff format --check proxystore integrations tests examples benchmarks
echo "== mypy --strict"
python -m mypy proxystore integrations
python -m mypy benchmarks
echo "== sphinx (-W: warnings are errors)"
python -m sphinx -W -q -b html docs docs/_build/html
echo "== pytest"
python -m pytest "$@"
