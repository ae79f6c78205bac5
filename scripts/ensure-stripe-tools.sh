#!/usr/bin/env bash
# Installs the two Stripe stand-ins the end-to-end tests use, pinned, into
# the tools folder ($HALOBUZZ_TOOLS_DIR, default <repo>/.tools), and prints
# two lines on stdout:
#   LOCALSTRIPE_BIN=<path of the localstripe executable>
#   STRIPE_SIGNER_DIR=<folder whose node_modules holds the stripe npm package>
#
# - localstripe (PyPI), a fake but stateful Stripe server, in its own venv:
#   our routes create and confirm PaymentIntents there, and it delivers
#   signed webhooks to our route.
# - stripe (npm), Stripe's official Node library: its
#   `webhooks.generateTestHeaderString` signs the payloads localstripe
#   cannot send (Checkout Sessions, charge.refunded), so that our verifier
#   is checked against an independent signer.
#
# Everything but the two lines goes to stderr. Idempotent: a complete
# install is kept, a partial one is redone. Run once before the tests
# (scripts/test.sh does), not from racing processes.
set -euo pipefail

LOCALSTRIPE_VERSION="1.15.10"
STRIPE_NPM_VERSION="23.1.0"

log() { printf 'ensure-stripe-tools: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib-tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-tools.sh"
set_tools_dir

venv="$tools_dir/localstripe-$LOCALSTRIPE_VERSION"
ensure_venv "$venv" localstripe localstripe "$LOCALSTRIPE_VERSION"

signer="$tools_dir/stripe-node-$STRIPE_NPM_VERSION"
ensure_npm_package "$signer" stripe "$STRIPE_NPM_VERSION"

echo "LOCALSTRIPE_BIN=$venv/bin/localstripe"
echo "STRIPE_SIGNER_DIR=$signer"
