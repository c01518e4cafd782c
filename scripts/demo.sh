#!/usr/bin/env bash
# The main job: the seed's workflow (add, then multiply) on the best backend available.
# Installs the project into .venv on first use. Arguments go to `oci-executor demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/oci-executor ]; then
    "$python" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check .
fi
exec .venv/bin/oci-executor demo "$@"
