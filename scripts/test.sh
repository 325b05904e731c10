#!/usr/bin/env bash
# Runs zonesync's whole test suite on a fresh Debian machine with Rust installed.
# Installs what the tests need where it is missing (Mosquitto, from Debian's
# packages); the tests start their own brokers on free loopback ports, so a
# Mosquitto already running on 1883 is neither needed nor disturbed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_mosquitto() {
  ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]
}

if need_mosquitto; then
  echo "== installing mosquitto (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
if need_mosquitto; then
  echo "mosquitto is still missing after the install step; the end-to-end tests need it" >&2
  exit 1
fi

echo "== building binaries (the end-to-end tests run them as processes)"
cargo build --workspace --bins
echo "== running tests"
cargo test --workspace
