#!/usr/bin/env bash
# Sets up and runs every check Attune has: installs the wasm32-wasip2 target
# and the fmt/clippy components, builds the guest components once, checks
# formatting and lints on the host and guest workspaces, then runs all tests
# (which build the Python and JavaScript examples in actions/, installing
# componentize-py and componentize-js on first use, start a private
# PostgreSQL for the outage test, drive the console in headless Chromium,
# installed here when missing, and start private OCI registries from
# Debian's docker-registry, installed here too, with the `oras` Python
# client in a venv), then fuzzes the API with schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if command -v rustup >/dev/null; then
    step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
    rustup target add wasm32-wasip2
    rustup component add rustfmt clippy
fi

step "Python 3 (venv) and Node.js (npm) for the Python and JavaScript action toolchains"
if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv nodejs npm
    else
        echo "install Python 3 with venv and Node.js with npm first" >&2
        exit 1
    fi
fi
python3 --version && node --version

step "iproute2 for the outbound filter's probe (it runs in a network namespace with only loopback up)"
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux
    else
        echo "install iproute2 (ip) and util-linux (unshare) first" >&2
        exit 1
    fi
fi

step "Chromium and ChromeDriver for the console's browser test"
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "install chromium and chromium-driver first (or set ATTUNE_SKIP_BROWSER=1)" >&2
        exit 1
    fi
fi
chromedriver --version

step "docker-registry (an OCI registry the registry tests start on loopback) and the oras client"
if [ ! -x /usr/bin/docker-registry ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry
    else
        echo "install docker-registry first" >&2
        exit 1
    fi
fi
# The tests start the binary themselves, each on a free port with its own
# storage; the package's service is neither needed nor used.
ORAS_VERSION=0.2.43
ORAS_VENV="${CARGO_TARGET_DIR:-target}/oras-venv"
if ! "$ORAS_VENV/bin/python" -c "import oras" 2>/dev/null; then
    python3 -m venv "$ORAS_VENV"
    "$ORAS_VENV/bin/pip" install --quiet --disable-pip-version-check "oras==$ORAS_VERSION"
fi

step "format"
cargo fmt --all --check
(cd actions && cargo fmt --all --check)

step "build (attune embeds the core pack; attune-test-guests builds every guest in actions/ for the tests)"
cargo build --workspace --all-targets

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
(cd actions && cargo clippy --release --target wasm32-wasip2 --workspace \
    ${ATTUNE_GUEST_TARGET_DIR:+--target-dir "$ATTUNE_GUEST_TARGET_DIR"} -- -D warnings)

step "test"
cargo test --workspace

step "API fuzzing (schemathesis against the OpenAPI document)"
bash tests/fuzz.sh
