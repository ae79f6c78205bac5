#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (a
# pinned nats-server when none of 2.12 or newer is on PATH; the pinned Stripe
# stand-ins: localstripe from PyPI in a venv, Stripe's Node library from npm),
# so that it works on a fresh machine.
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

if [ -z "${MONGODB_URI:-}" ]; then
  # The MongoDB adapter's conformance suite needs a server; its own logic is
  # unit-tested either way.
  echo "mongodb conformance: skipped (MONGODB_URI not set)"
fi

# A one-shot test run gains nothing from incremental caches, which cost disk
# (CI builds from a clean checkout).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked
