#!/usr/bin/env bash
# Run the whole test suite: lint, types, the docs site (mkdocs build --strict), and pytest on this
# machine's python3 with the real engines (see docs/contributing.md) and a real Covalent server.
# Extra arguments go to tox.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv-tox/bin/tox ]; then
    "$python" -m venv .venv-tox
    .venv-tox/bin/pip install -q --disable-pip-version-check "tox>=4.11"
fi
exec .venv-tox/bin/tox run -e "${TOX_ENVS:-lint,type,docs,py}" "$@"
