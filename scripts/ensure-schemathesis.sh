#!/usr/bin/env bash
# Installs schemathesis, the property-based API tester the fuzzing test
# (tests/tests/it/fuzz.rs) runs against the real service, pinned, into the
# tools folder ($HALOBUZZ_TOOLS_DIR, default <repo>/.tools), and prints the
# path of its `st` executable on stdout.
#
# Pinned because its generated cases and checks change between releases:
# the test's "zero failures" is a statement about this version.
#
# Everything but the path goes to stderr. Idempotent: a complete install is
# kept, a partial one is redone. Run once before the tests (scripts/test.sh
# does), not from racing processes.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"

log() { printf 'ensure-schemathesis: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-tools.sh"
ensure_pypi_tool schemathesis schemathesis "$SCHEMATHESIS_VERSION" st --version
