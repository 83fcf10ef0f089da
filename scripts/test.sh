#!/usr/bin/env bash
# Runs the whole test suite (the README's test command): installs missing Debian packages, builds
# every target and the Debian package, then runs every test. Integration tests start their own
# private containerd instances and mount overlays, so this must run as root. Extra arguments go to `cargo test` (e.g. `-- --nocapture`).
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

# The Debian package (zigbuild against glibc 2.28 in the dist profile, cargo deb: 7 min the first
# time on 2 cores, 4 after a source change; docs/packaging.md), made once here so tests/package.rs
# checks it instead of building it itself.
step "scripts/package.sh"
TPCM_DEB=$(scripts/package.sh | tail -n 1)
export TPCM_DEB

step "cargo test --all-targets $*"
cargo test --all-targets "$@"

# A short run of each fuzz target (fuzz/, cargo-fuzz) from its kept corpus: what the long runs
# found stays found. cargo-fuzz needs nightly flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1. New inputs go to a scratch corpus, not into the repository. The targets are
# built unoptimized (--dev, line tables only: 3 min on 2 cores instead of 9 for cargo-fuzz's
# optimized default); the corpus replay is what this run is for, and it stays under the sanitizer.
# The long runs (docs/archive-safety.md) use the optimized build.
step "fuzz targets, ${TPCM_FUZZ_SECONDS:=15} s each"
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in archive_scan layer_extract args_parse gnoi_start; do
    mkdir -p "$scratch/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$TPCM_FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=20
done
