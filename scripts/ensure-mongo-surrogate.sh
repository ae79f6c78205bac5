#!/usr/bin/env bash
# Installs SecantusDB, the MongoDB wire-protocol server the tests run the
# MongoDB adapter against, pinned, into the tools folder
# ($HALOBUZZ_TOOLS_DIR, default <repo>/.tools), and prints the path of its
# `secantusd-py` executable on stdout.
#
# No `mongod` can be installed on these machines (not in Debian, PyPI or
# npm; mongodb-memory-server downloads binaries at run time). SecantusDB
# (PyPI) speaks MongoDB's wire protocol over WiredTiger: by default it
# presents itself as a one-member replica set (transactions work), and with
# `--standalone` as a standalone server. It is a surrogate, not MongoDB: see
# README.md ("Tests") for what it does not prove. GPL-2.0: it stays a
# separate test process in its own venv, never linked or shipped.
#
# Everything but the path goes to stderr. Idempotent: a complete install is
# kept, a partial one is redone. Run once before the tests (scripts/test.sh
# does), not from racing processes.
set -euo pipefail

SECANTUSDB_VERSION="0.7.0b3"

log() { printf 'ensure-mongo-surrogate: %s\n' "$*" >&2; }

if [ -n "${HALOBUZZ_TOOLS_DIR:-}" ]; then
    tools_dir="$HALOBUZZ_TOOLS_DIR"
else
    tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools"
fi
mkdir -p "$tools_dir"

venv="$tools_dir/secantusdb-$SECANTUSDB_VERSION"
# A venv's scripts name their interpreter by absolute path, so it is built
# in place; the marker file, written last, says the install is complete.
if ! [ -f "$venv/.complete" ]; then
    log "installing SecantusDB $SECANTUSDB_VERSION (PyPI) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "SecantusDB==$SECANTUSDB_VERSION" >&2
    "$venv/bin/secantusd-py" --help >/dev/null
    touch "$venv/.complete"
fi

echo "$venv/bin/secantusd-py"
