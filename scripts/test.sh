#!/usr/bin/env bash
# Runs the whole test suite (the README's test command): installs missing Debian packages, builds
# every target, then runs every test. Integration tests start their own private containerd instances
# and mount overlays, so this must run as root. Extra arguments go to `cargo test` (e.g. `-- --nocapture`).
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the tests start containerd, mount overlays and create cgroups: run as root" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found: install a Rust toolchain with edition 2024 support (rustup)" >&2
    exit 1
fi

step "scripts/install-deps.sh"
scripts/install-deps.sh

step "cargo build --all-targets"
cargo build --all-targets

step "cargo test --all-targets $*"
cargo test --all-targets "$@"
