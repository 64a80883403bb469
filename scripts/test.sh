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
# The proxy offers the buffer protocol only on Python 3.12+ (PEP 688): run the transparency
# suite there too when such an interpreter is installed (pyenv's, or one on PATH).
py3next=""
for candidate in "$HOME"/.pyenv/versions/3.1[23]*/bin/python3 python3.13 python3.12; do
  if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
    py3next=$candidate
    break
  fi
done
if [ -n "$py3next" ] && [ $# -eq 0 ]; then
  echo "== transparency suite on $("$py3next" --version)"
  venv="${TMPDIR:-/tmp}/proxystore-py3next"
  [ -x "$venv/bin/python" ] || "$py3next" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    numpy lazy-object-proxy cloudpickle pytest pytest-timeout
  PYTHONPATH="$PWD" "$venv/bin/python" -m pytest --noconftest -p no:cacheprovider -q \
    tests/test_transparency.py tests/test_seed_proxy.py
else
  echo "== transparency suite on Python 3.12+: skipped (no such interpreter installed)"
fi

echo "== pytest"
python -m pytest "$@"
