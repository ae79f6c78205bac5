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

# shellcheck source=scripts/lib-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-tools.sh"
ensure_pypi_tool secantusdb SecantusDB "$SECANTUSDB_VERSION" secantusd-py --help
