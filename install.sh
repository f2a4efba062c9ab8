#!/usr/bin/env bash
# Install kdf-remote into ./.venv from this checkout.
#   ./install.sh          the client, the daemon and the Pulumi program (everything a user runs)
#   ./install.sh --dev    the same plus the test, lint and benchmark tools
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Dependency groups (--group) need pip >= 25.1; a fresh venv may ship an older pip.
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
if [ "${1:-}" = "--dev" ]; then
    .venv/bin/python -m pip install --quiet -e '.[all]' --group dev
else
    .venv/bin/python -m pip install --quiet -e '.[all]'
fi
echo "kdf-remote installed in $(pwd)/.venv"
