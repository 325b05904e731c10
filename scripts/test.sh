#!/usr/bin/env bash
# Runs zonesync's whole test suite on a fresh Debian machine with Rust installed.
# Installs what the tests need where it is missing (Mosquitto, nats-server, socat, Chromium and
# chromedriver, dpkg-dev, prometheus (for promtool), from Debian's packages; pymodbus 3.x, dlt645 3.x,
# pysparkplug, asyncua and openapi-spec-validator, with pip; cargo-deb, from crates.io);
# the tests start their own brokers and
# meters on free loopback ports, so a Mosquitto already running on 1883 is
# neither needed nor disturbed.
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

# The federation test (tests/federation.rs) starts its own NATS hub and leaf
# nodes with JetStream: nats-server from Debian's package.
need_nats() {
  ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]
}

if need_nats; then
  echo "== installing nats-server (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
fi
if need_nats; then
  echo "nats-server is still missing after the install step; the federation test needs it" >&2
  exit 1
fi

# The serial-port tests (tests/serial.rs) stand a socat pty pair in for the
# RS-485 line (Debian package).
if ! command -v socat >/dev/null 2>&1; then
  echo "== installing socat (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq socat >/dev/null
fi
if ! command -v socat >/dev/null 2>&1; then
  echo "socat is still missing after the install step; the serial-port tests need it" >&2
  exit 1
fi

# Python peers and checkers come from PyPI. A virtualenv or pyenv Python
# takes a plain install; Debian's own Python refuses one (PEP 668), so fall
# back to the user's site-packages.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "== installing python3 and pip (Debian packages)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
fi

# pip_for CHECK WHAT PACKAGE...: installs the packages unless the Python
# statement CHECK already succeeds, and stops the run, saying WHAT needs
# them, if it still fails after.
pip_for() {
  local check="$1" what="$2"
  shift 2
  if ! python3 -c "$check" >/dev/null 2>&1; then
    echo "== installing $* (pip)"
    python3 -m pip install -q "$@" \
      || python3 -m pip install -q --user --break-system-packages "$@"
  fi
  if ! python3 -c "$check" >/dev/null 2>&1; then
    echo "$* still missing after the install step; $what" >&2
    exit 1
  fi
}

# The Modbus source's end-to-end test runs a real Modbus TCP server from
# pymodbus 3.x (tests/peers/modbus_meter.py); the serial-port test serves
# Modbus RTU from it, which needs pyserial.
pip_for "import sys, serial, pymodbus; sys.exit(0 if pymodbus.__version__.startswith('3.') else 1)" \
  "the Modbus end-to-end tests need them" 'pymodbus>=3,<4' pyserial

# The dashboard's end-to-end test drives a real browser: headless Chromium
# through chromedriver (Debian packages), and renders the Chinese labels with
# Noto CJK so its screenshots show characters, not boxes.
need_chromium() {
  ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
      && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; }
}

if need_chromium; then
  echo "== installing chromium, chromium-driver and fonts-noto-cjk (Debian packages)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-noto-cjk fontconfig >/dev/null
fi
if need_chromium; then
  echo "chromium, chromedriver or a Chinese font is still missing after the install step; the dashboard test needs them" >&2
  exit 1
fi

# The goal gauges on /metrics are checked with Prometheus's own linter,
# `promtool check metrics` (Debian `prometheus`; only the tool is used: the
# tests start no Prometheus server).
need_promtool() {
  ! command -v promtool >/dev/null 2>&1
}

if need_promtool; then
  echo "== installing prometheus, for promtool (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if need_promtool; then
  echo "promtool is still missing after the install step; the metrics test needs it" >&2
  exit 1
fi

# The DL/T 645 source's end-to-end tests run the meter (slave) service of the
# PyPI `dlt645` library (3.x, needs Python >= 3.10) behind a TCP server
# (tests/peers/dlt645_meter.py).
pip_for "import sys, dlt645; sys.exit(0 if dlt645.__version__.startswith('3.') else 1)" \
  "the DL/T 645 end-to-end tests need it (Python >= 3.10)" 'dlt645>=3,<4'

# The OpenAPI description (tests/e2e/openapi.rs) is checked with the
# python-openapi project's validator (PyPI `openapi-spec-validator`).
pip_for "import openapi_spec_validator" "the OpenAPI test needs it" 'openapi-spec-validator>=0.7,<1'

# The gateway-source test (tests/gateways.rs) runs a Sparkplug B edge node
# built on the PyPI `pysparkplug` library (tests/peers/sparkplug_node.py).
pip_for "import pysparkplug" "the Sparkplug B end-to-end test needs it" 'pysparkplug>=0.6,<1'

# The OPC UA source's end-to-end test (tests/opcua.rs) runs a server built on
# FreeOpcUa's PyPI `asyncua` (tests/peers/opcua_server.py; checked with 2.1),
# whose `cryptography` dependency also makes its certificates.
pip_for "import asyncua, cryptography" "the OPC UA end-to-end test needs it" 'asyncua>=1.1,<3'

# The package test (tests/package.rs) builds the .deb files with cargo-deb
# (crates.io, pinned) and installs them with dpkg (needs root, as CI has);
# cargo-deb's `$auto` dependencies need dpkg-shlibdeps (dpkg-dev), and the
# test runs the services as their users with util-linux's setpriv.
need_cargo_deb() {
  ! cargo deb --version >/dev/null 2>&1
}
if need_cargo_deb; then
  echo "== installing cargo-deb 3.8.0 (crates.io, --locked)"
  cargo install --locked cargo-deb --version 3.8.0
fi
if need_cargo_deb; then
  echo "cargo-deb is still missing after the install step; the package test needs it" >&2
  exit 1
fi
if ! command -v dpkg-shlibdeps >/dev/null 2>&1 || ! command -v setpriv >/dev/null 2>&1 \
    || ! command -v adduser >/dev/null 2>&1; then
  echo "== installing dpkg-dev, adduser, util-linux (Debian packages)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dpkg-dev adduser util-linux >/dev/null
fi

echo "== building binaries (the end-to-end tests run them as processes)"
cargo build --workspace --bins
echo "== running tests"
cargo test --workspace
