#!/usr/bin/env bash
# The README's "main job on an embedded default" demo: builds tpcm, starts a private containerd under
# ./.tpcm-demo/, builds the busybox fixture archives, imports the docker-save one with
# `tpcm image import`, lists images, runs the imported image with ctr (containerd's own client)
# to prove containerd can use what tpcm imported, then installs a TPC from the OCI archive, shows
# it in `tpcm list`, reads what it wrote to /tpc, and uninstalls it. Everything is stopped and unmounted on exit; files
# stay in ./.tpcm-demo/ for inspection (containerd.log, store/) and are wiped on the next run.
# Needs root (containerd, overlay mounts).
set -euo pipefail

cd "$(dirname "$0")/.."

DEMO="$PWD/.tpcm-demo"
SOCK="$DEMO/containerd.sock"
NS=tpcm-demo
REF=docker.io/tpcm-fixture/busybox:1.0
TPCM=target/release/tpcm
CD_PID=

step() { printf '\n==> %s\n' "$*"; }
die() { echo "demo.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (containerd needs it)"
[ "${#SOCK}" -lt 100 ] || die "socket path $SOCK is too long for a unix socket; move the repo"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup)"

# Kills, by pid, the demo's containerd (`--config $DEMO/config.toml`) and its shims
# (`-address $SOCK`) left over from an interrupted run; nothing else. A process that ends between
# the glob and the read (cargo's and the demo's own short-lived children do) is skipped quietly:
# the group's `2>/dev/null` also covers the `<` redirection, which the shell performs, and
# reports, before a `2>/dev/null` written after it on the same command would take effect.
kill_demo_processes() {
    local f pid cmdline
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [ "$pid" = "$$" ] && continue
        cmdline=$( { tr '\0' ' ' <"$f"; } 2>/dev/null ) || continue
        case "$cmdline" in
            containerd\ --config\ "$DEMO/config.toml"* | *containerd-shim*"-address $SOCK"*)
                kill -KILL "$pid" 2>/dev/null || true ;;
        esac
    done
}

# Lazily unmounts everything mounted under the demo dir, deepest first.
unmount_demo() {
    local m
    awk -v d="$DEMO/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo \
        | awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

remove_demo_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/"$NS"; do
        [ -d "$d" ] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$CD_PID" ] && kill -0 "$CD_PID" 2>/dev/null; then
        for t in $(timeout 10 ctr -a "$SOCK" -n "$NS" tasks ls -q 2>/dev/null); do
            timeout 10 ctr -a "$SOCK" -n "$NS" tasks delete --force "$t" >/dev/null 2>&1
        done
        kill -TERM "$CD_PID" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$CD_PID" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$CD_PID" 2>/dev/null
        wait "$CD_PID" 2>/dev/null
    fi
    kill_demo_processes
    unmount_demo
    remove_demo_cgroups
    rm -rf "/run/containerd/runc/$NS"
    if [ "$rc" -ne 0 ] && [ -f "$DEMO/containerd.log" ]; then
        echo "--- last lines of $DEMO/containerd.log ---" >&2
        tail -n 20 "$DEMO/containerd.log" >&2
    fi
    exit "$rc"
}

step "scripts/install-deps.sh"
scripts/install-deps.sh

step "cargo build --release"
cargo build --release

step "starting a private containerd in $DEMO"
# Leftovers of an interrupted previous run.
kill_demo_processes
unmount_demo
remove_demo_cgroups
rm -rf "$DEMO"
mkdir -p "$DEMO"/{root,state,tmp,store,data,units}
cat >"$DEMO/config.toml" <<TOML
version = 2
root = "$DEMO/root"
state = "$DEMO/state"
temp = "$DEMO/tmp"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = "$DEMO/debug.sock"
TOML
trap cleanup EXIT
trap 'exit 130' INT TERM
containerd --config "$DEMO/config.toml" </dev/null >"$DEMO/containerd.log" 2>&1 &
CD_PID=$!
deadline=$((SECONDS + 20))
until [ -S "$SOCK" ] && ctr -a "$SOCK" version >/dev/null 2>&1; do
    kill -0 "$CD_PID" 2>/dev/null || die "containerd exited during start-up"
    [ "$SECONDS" -lt "$deadline" ] || die "containerd did not answer on $SOCK within 20 s"
    sleep 0.05
done
echo "containerd is up (pid $CD_PID, socket $SOCK)"

step "building fixture archives"
cargo run --release --example make-fixtures -- "$DEMO/fixtures"

# TPCM_BINARY: the units name this binary (on a switch the package installs /usr/bin/tpcm).
export TPCM_ROOT="$DEMO/store" TPCM_DATA_ROOT="$DEMO/data" TPCM_SYSTEMD_DIR="$DEMO/units" TPCM_BINARY="$PWD/$TPCM"

step "$TPCM --containerd $SOCK --namespace $NS image import $DEMO/fixtures/busybox-v12.tar"
time "$TPCM" --containerd "$SOCK" --namespace "$NS" image import "$DEMO/fixtures/busybox-v12.tar"

step "$TPCM --containerd $SOCK --namespace $NS image list"
"$TPCM" --containerd "$SOCK" --namespace "$NS" image list

step "ctr -a $SOCK -n $NS run --rm $REF demo /bin/echo \"hello from tpcm\""
ctr -a "$SOCK" -n "$NS" run --rm "$REF" demo /bin/echo "hello from tpcm"

ARGS="-e GREETING=hello -- /bin/sh -c 'trap \"exit 0\" TERM; echo \$GREETING from a TPC > /tpc/greeting; sleep 100000 & wait'"
step "$TPCM install demo-tpc $DEMO/fixtures/busybox-oci.tar --args \"$ARGS\" -y"
"$TPCM" --containerd "$SOCK" --namespace "$NS" install demo-tpc "$DEMO/fixtures/busybox-oci.tar" --args "$ARGS" -y

step "$TPCM list"
"$TPCM" --containerd "$SOCK" --namespace "$NS" list
deadline=$((SECONDS + 20))
until [ -s "$DEMO/data/demo-tpc/greeting" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "the TPC did not write /tpc/greeting within 20 s"
    sleep 0.05
done
echo "the TPC wrote: $(cat "$DEMO/data/demo-tpc/greeting")  (its /tpc is $DEMO/data/demo-tpc)"

step "$TPCM uninstall demo-tpc -y"
"$TPCM" --containerd "$SOCK" --namespace "$NS" uninstall demo-tpc -y

step "demo succeeded"
