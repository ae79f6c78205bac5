#!/usr/bin/env bash
# Installs what the console's browser test needs and prints two lines on
# stdout:
#   CHROMIUM_BIN=<path of Debian's chromium>
#   PLAYWRIGHT_DIR=<folder whose node_modules holds playwright-core>
#
# - chromium: Debian's package (a test tool's own browser download fails on
#   these machines). Installed with apt-get when missing, which needs root;
#   $CHROMIUM_BIN names another build.
# - playwright-core (npm), pinned: it drives that browser and downloads
#   none of its own.
#
# Everything but the two lines goes to stderr. Idempotent. Run once before
# the tests (scripts/test.sh does), not from racing processes.
set -euo pipefail

PLAYWRIGHT_CORE_VERSION="1.65.2"

log() { printf 'ensure-browser: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-tools.sh"
set_tools_dir

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if ! [ -x "$chromium" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "no chromium at $chromium: install Debian's package (apt-get install chromium) or set CHROMIUM_BIN"
        exit 1
    fi
    log "installing Debian's chromium (apt-get)"
    if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq >&2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
"$chromium" --version >&2

driver="$tools_dir/playwright-core-$PLAYWRIGHT_CORE_VERSION"
# playwright-core never downloads a browser; the variable says so anyway.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 ensure_npm_package "$driver" playwright-core "$PLAYWRIGHT_CORE_VERSION"

echo "CHROMIUM_BIN=$chromium"
echo "PLAYWRIGHT_DIR=$driver"
