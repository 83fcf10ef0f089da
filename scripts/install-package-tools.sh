#!/usr/bin/env bash
# Installs the pinned tools that build tpcm's Debian package into .tools/ in the repo (or
# $TPCM_TOOLS), only when they are missing or at another version:
# - cargo-zigbuild and zig (PyPI's ziglang) in a Python virtual environment: zig links the binary
#   against glibc 2.28's symbols, so it runs on bullseye-based SONiC (glibc 2.31) and newer;
# - cargo-deb, built from crates with `cargo install --locked`: makes the .deb from the assets
#   and maintainer scripts listed in Cargo.toml's [package.metadata.deb].
# Prints the directories to put first on PATH, one per line. Safe to re-run.
set -euo pipefail

cd "$(dirname "$0")/.."

CARGO_ZIGBUILD_VERSION=0.24.1
ZIG_VERSION=0.15.2
CARGO_DEB_VERSION=3.8.0

TOOLS="${TPCM_TOOLS:-$PWD/.tools}"
VENV="$TOOLS/venv"

log() { echo "install-package-tools: $*" >&2; }

if ! "$VENV/bin/cargo-zigbuild" --version 2>/dev/null | grep -qx "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" \
    || ! "$VENV/bin/python3" -m ziglang version 2>/dev/null | grep -qx "$ZIG_VERSION"; then
    log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION and zig $ZIG_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
        "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIG_VERSION"
fi

if ! "$TOOLS/bin/cargo-deb" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    log "building cargo-deb $CARGO_DEB_VERSION into $TOOLS/bin"
    # Its own target directory: the project's stays the project's.
    CARGO_TARGET_DIR="$TOOLS/build" cargo install --locked --quiet --root "$TOOLS" \
        --version "$CARGO_DEB_VERSION" cargo-deb
    rm -rf "$TOOLS/build"
fi

echo "$VENV/bin"
echo "$TOOLS/bin"
