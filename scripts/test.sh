#!/usr/bin/env bash
# The whole test suite: lint, types, docs, and pytest on this machine's python3 with the real
# engines and a real Covalent server (see docs/contributing.md). Extra arguments go to tox.
#
# Run as root, it first brings the test engines up with scripts/setup-engines.sh (idempotent:
# a few seconds when they already run; OCI_TEST_NO_SETUP=1 skips it). Without root and without
# engines the engine tests skip, and the last line says how many and how to enable them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if [ "$(id -u)" -eq 0 ]; then
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    fi
    if [ -z "${OCI_TEST_NO_SETUP:-}" ]; then
        bash scripts/setup-engines.sh
    fi
fi

if [ ! -x .venv-tox/bin/tox ]; then
    "$python" -m venv .venv-tox
    .venv-tox/bin/pip install -q --disable-pip-version-check "tox>=4.11"
fi

summary=$(mktemp "${TMPDIR:-/tmp}/oci-test-summary.XXXXXX")
trap 'rm -f "$summary"' EXIT
status=0
OCI_TEST_SUMMARY_FILE=$summary .venv-tox/bin/tox run -e "${TOX_ENVS:-lint,type,docs,py}" "$@" || status=$?
if [ -s "$summary" ]; then
    cat "$summary"
fi
exit "$status"
