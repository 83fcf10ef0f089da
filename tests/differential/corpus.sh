#!/usr/bin/env bash
# Builds the differential import corpus with real tools (Debian's buildah, podman and skopeo on
# the vfs driver, umoci, GNU tar, and docker.io's dockerd on a private socket when it starts):
# image archives written the way those tools write them, each holding the stress cases of
# issue 18 (odd modes, file capabilities, xattrs and ACLs, hard and symbolic links, whiteouts,
# opaque directories, type swaps, devices, long and non-UTF-8 names, big ids, odd and sub-second
# mtimes, PAX sparse files, implied parent directories, bare tags, zstd, a multi-platform index).
#
# Usage: corpus.sh OUT_DIR BUSYBOX. Writes OUT_DIR/<name>.tar (one archive each) and prints one
# name per line; a tool that cannot run here (dockerd) is reported on stderr and skipped.
set -euo pipefail

out=$1
busybox=$2
work=$out/work
mkdir -p "$work"
cd "$work"

st="--root $work/storage --runroot $work/run --storage-driver vfs"
bah() { buildah $st "$@"; }
# containers-storage reference for skopeo / podman to the same store.
cs="containers-storage:[vfs@$work/storage+$work/run]"
# No registry is ever contacted; short names resolve to localhost.
export REGISTRIES_CONFIG_PATH=$work/registries.conf
printf 'unqualified-search-registries = []\n' > "$REGISTRIES_CONFIG_PATH"
export BUILDAH_ISOLATION=chroot
emit() { echo "$1"; }

# ---- the stress image: base layer + changes, committed by buildah -------------------------
ctr=$(bah from scratch)
mnt=$(bah mount "$ctr")
mkdir -p "$mnt"/bin "$mnt"/etc "$mnt"/tmp "$mnt"/home/u "$mnt"/usr/lib "$mnt"/data/old "$mnt"/swap/d
cp "$busybox" "$mnt/bin/busybox"
ln -s busybox "$mnt/bin/sh"
ln -s usr/lib "$mnt/lib"
chmod 1777 "$mnt/tmp"
chmod 0700 "$mnt/home/u"; chown 1000:1000 "$mnt/home/u"
setfattr -n user.dirx -v 1 "$mnt/home/u"
setfattr -n security.foo -v bar "$mnt/home/u"
chmod 0750 "$mnt/usr/lib"; chown 0:7 "$mnt/usr/lib"
setfattr -n user.libx -v 2 "$mnt/usr/lib"
echo old > "$mnt/data/old/f"
echo motd > "$mnt/etc/motd"
echo swapped > "$mnt/swap/f"
touch "$mnt/swap/d/inner"
bah unmount "$ctr" >/dev/null
bah commit -q "$ctr" localhost/stress:base >/dev/null

# The changes go into a layer of their own on top of the base.
ctr=$(bah from localhost/stress:base)
mnt=$(bah mount "$ctr")
# odd modes and set-id bits
for m in 4755 2755 1777 0000 0444 6711; do echo "$m" > "$mnt/etc/mode-$m"; chmod "$m" "$mnt/etc/mode-$m"; done
# file capabilities, xattrs, an ACL
cp "$busybox" "$mnt/bin/capped"; setcap cap_net_raw,cap_net_admin+ep "$mnt/bin/capped"
echo x > "$mnt/etc/xattrs"; setfattr -n user.k -v value "$mnt/etc/xattrs"; setfattr -n user.empty "$mnt/etc/xattrs"
setfattr -n security.custom -v s "$mnt/etc/xattrs"
echo acl > "$mnt/etc/acl"; setfacl -m u:1234:r "$mnt/etc/acl"
mkdir "$mnt/etc/acldir"; setfacl -d -m g:55:rx "$mnt/etc/acldir"
# hard links, symlinks (absolute, relative, dangling, to a directory)
echo shared > "$mnt/etc/h1"; ln "$mnt/etc/h1" "$mnt/etc/h2"; ln "$mnt/etc/h1" "$mnt/bin/h3"
ln -s /etc/motd "$mnt/etc/abs-link"; ln -s ../etc/h1 "$mnt/bin/rel-link"; ln -s /nowhere "$mnt/etc/dangling"
# whiteouts, an opaque directory, type swaps
rm "$mnt/etc/motd"
rm -rf "$mnt/data/old"; rm -rf "$mnt/data"; mkdir -p "$mnt/data/new"; echo n > "$mnt/data/new/f"
rm "$mnt/swap/f"; mkdir "$mnt/swap/f"; echo in > "$mnt/swap/f/x"
rm -rf "$mnt/swap/d"; ln -s /etc "$mnt/swap/d"
# devices and a FIFO
mknod "$mnt/etc/null" c 1 3; mknod "$mnt/etc/loop" b 7 0; mkfifo "$mnt/etc/fifo"
chmod 0620 "$mnt/etc/null"
# long and non-UTF-8 names
long=$(printf 'n%.0s' $(seq 1 200)); mkdir -p "$mnt/long/$(printf 'd%.0s' $(seq 1 120))"; echo l > "$mnt/long/$long"
echo l > "$mnt/long/$(printf 'd%.0s' $(seq 1 120))/$long"
echo b > "$mnt/etc/$(printf 'bad-\xff\xfe-name')"
# big ids
echo big > "$mnt/etc/bigid"; chown 4000000000:3000000000 "$mnt/etc/bigid"
echo mid > "$mnt/etc/midid"; chown 2097152:70000 "$mnt/etc/midid"
# odd mtimes: nanoseconds, before 1970, after 2262, a directory's own time
echo t > "$mnt/etc/t-nano"; touch -d '2021-02-03 04:05:06.123456789' "$mnt/etc/t-nano"
echo t > "$mnt/etc/t-old"; touch -d '1960-01-01' "$mnt/etc/t-old"
echo t > "$mnt/etc/t-2250"; touch -d '2250-01-01' "$mnt/etc/t-2250"
mkdir "$mnt/etc/t-dir"; touch "$mnt/etc/t-dir/x"; touch -d '2001-01-01 00:00:00.5' "$mnt/etc/t-dir"
touch -h -d '2002-02-02 02:02:02.25' "$mnt/etc/abs-link"
# a file under a lower directory this layer does not touch otherwise
echo x > "$mnt/tmp/x"; echo f > "$mnt/home/u/file"
bah unmount "$ctr" >/dev/null
bah config --cmd '/bin/sh' "$ctr"
bah commit -q "$ctr" localhost/stress:1 >/dev/null

bah push -q localhost/stress:1 "docker-archive:$out/buildah-docker.tar:stress:1"; emit buildah-docker
bah push -q --format oci localhost/stress:1 "oci-archive:$out/buildah-oci-gzip.tar:docker.io/library/stress:1"; emit buildah-oci-gzip
bah push -q --format oci --compression-format zstd localhost/stress:1 "oci-archive:$out/buildah-oci-zstd.tar:stress:zstd"; emit buildah-oci-zstd
podman $st save -q --format oci-archive -o "$out/podman-oci.tar" localhost/stress:1; emit podman-oci
podman $st save -q --format docker-archive -o "$out/podman-docker.tar" localhost/stress:1; emit podman-docker
skopeo copy -q --dest-compress-format zstd "${cs}localhost/stress:1" "oci-archive:$out/skopeo-zstd.tar:latest"; emit skopeo-zstd
if skopeo copy -q --dest-compress-format zstd:chunked "${cs}localhost/stress:1" "oci-archive:$out/skopeo-zstd-chunked.tar:chunked" 2>/dev/null; then
    emit skopeo-zstd-chunked
fi

# ---- umoci: repack of a bare-tagged layout (two bare tags), implied parents ---------------
skopeo copy -q "${cs}localhost/stress:base" "oci:$work/layout:base"
umoci unpack --image "$work/layout:base" "$work/bundle" >/dev/null
echo umoci > "$work/bundle/rootfs/home/u/umoci-file"
echo lib > "$work/bundle/rootfs/usr/lib/umoci-lib"
rm "$work/bundle/rootfs/etc/motd"
umoci repack --image "$work/layout:v2" "$work/bundle" >/dev/null
tar -C "$work/layout" -cf "$out/umoci-baretags.tar" .; emit umoci-baretags

# ---- GNU tar layers in a docker-save archive: implied parents, PAX sparse, PAX times, ./ ----
gt=$work/gnutar
mkdir -p "$gt/l1" "$gt/l2" "$gt/l3"
( cd "$gt/l1"
  mkdir -p bin tmp home/u usr/lib
  cp "$busybox" bin/busybox; ln -s busybox bin/sh; ln -s usr/lib lib
  chmod 1777 tmp; chmod 0700 home/u; chown 1000:1000 home/u; setfattr -n user.dirx -v 1 home/u
  chmod 0750 usr/lib; chown 0:7 usr/lib; setfattr -n user.libx -v 2 usr/lib
  echo a > tmp/a )
chmod 0700 "$gt/l1"
tar -C "$gt/l1" --format=posix --xattrs --xattrs-include='*' -cf "$gt/l1.tar" .
( cd "$gt/l2"
  mkdir -p tmp home/u lib newdir/sub
  echo x > tmp/x; echo f > home/u/file; echo y > lib/y; echo s > newdir/sub/f
  truncate -s 3M sp0; printf 'data' | dd of=sp0 bs=1 seek=1048576 conv=notrunc 2>/dev/null
  cp --sparse=always sp0 sp1; cp --sparse=always sp0 sp2
  echo n > nano; touch -d '2020-01-01 00:00:00.987654321' nano
  echo f > far; touch -d '2300-01-01' far )
# member paths only: no directory entries, so tmp, home, home/u, lib, newdir, newdir/sub are implied
tar -C "$gt/l2" --format=posix -cf "$gt/l2.tar" tmp/x home/u/file lib/y newdir/sub/f nano far
tar -C "$gt/l2" --format=posix --sparse --sparse-version=1.0 -rf "$gt/l2.tar" sp0
tar -C "$gt/l2" --format=posix --sparse --sparse-version=0.1 -rf "$gt/l2.tar" sp1
tar -C "$gt/l2" --format=posix --sparse --sparse-version=0.0 -rf "$gt/l2.tar" sp2
# whiteouts: a file, a top-level file, and newdir made opaque (its sub/ from l2 hidden) with a new file
( cd "$gt/l3"; mkdir tmp newdir; touch tmp/.wh.x .wh.far newdir/.wh..wh..opq; echo k > newdir/kept )
tar -C "$gt/l3" --format=gnu -cf "$gt/l3.tar" ./tmp/.wh.x ./.wh.far ./newdir/.wh..wh..opq ./newdir/kept
sha() { sha256sum "$1" | cut -d' ' -f1; }
d1=$(sha "$gt/l1.tar"); d2=$(sha "$gt/l2.tar"); d3=$(sha "$gt/l3.tar")
mkdir -p "$gt/ds"
cp "$gt/l1.tar" "$gt/ds/$d1.tar"; cp "$gt/l2.tar" "$gt/ds/$d2.tar"; cp "$gt/l3.tar" "$gt/ds/$d3.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s","sha256:%s"]}}' "$d1" "$d2" "$d3" > "$gt/config.json"
dc=$(sha "$gt/config.json"); mv "$gt/config.json" "$gt/ds/$dc.json"
printf '[{"Config":"%s.json","RepoTags":["gnutar/layers:1"],"Layers":["%s.tar","%s.tar","%s.tar"]}]' "$dc" "$d1" "$d2" "$d3" > "$gt/ds/manifest.json"
tar -C "$gt/ds" -cf "$out/gnutar-docker.tar" .; emit gnutar-docker

# ---- an old GNU sparse file (type 'S', tar --format=gnu --sparse) in a docker-save archive ----
# Go's tar reader passes type 'S' on and containerd's applier refuses it: so must tpcm.
mkdir -p "$gt/os" "$gt/os-ds"
( cd "$gt/os"; truncate -s 3M sp; printf 'data' | dd of=sp bs=1 seek=1048576 conv=notrunc 2>/dev/null; echo hi > plain )
tar -C "$gt/os" --format=gnu --sparse -cf "$gt/os.tar" plain sp
python3 -c 'import sys, tarfile; sys.exit(0 if any(m.type == tarfile.GNUTYPE_SPARSE for m in tarfile.open(sys.argv[1])) else 1)' "$gt/os.tar" \
    || { echo "corpus: GNU tar wrote no old-GNU sparse (type S) entry" >&2; exit 1; }
do=$(sha "$gt/os.tar"); cp "$gt/os.tar" "$gt/os-ds/$do.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$do" > "$gt/os-config.json"
dc=$(sha "$gt/os-config.json"); mv "$gt/os-config.json" "$gt/os-ds/$dc.json"
printf '[{"Config":"%s.json","RepoTags":["gnutar/oldsparse:1"],"Layers":["%s.tar"]}]' "$dc" "$do" > "$gt/os-ds/manifest.json"
tar -C "$gt/os-ds" -cf "$out/gnutar-oldsparse.tar" .; emit gnutar-oldsparse

# ---- podman import of a GNU tar rootfs (one layer, ./ entry 0700) -------------------------
podman $st import -q "$gt/l1.tar" localhost/imported:1 >/dev/null
podman $st save -q --format oci-archive -o "$out/podman-import.tar" localhost/imported:1; emit podman-import

# ---- a multi-platform index (nested), host platform + arm64 --------------------------------
bah manifest create localhost/multi:1 >/dev/null
bah manifest add localhost/multi:1 "containers-storage:localhost/stress:base" >/dev/null
arm=$(bah from scratch); am=$(bah mount "$arm"); echo arm > "$am/arm"; bah unmount "$arm" >/dev/null
bah config --arch arm64 "$arm"; bah commit -q "$arm" localhost/multi-arm:1 >/dev/null
bah manifest add --arch arm64 localhost/multi:1 "containers-storage:localhost/multi-arm:1" >/dev/null
bah manifest push -q --all --format oci localhost/multi:1 "oci-archive:$out/buildah-multi.tar:docker.io/library/multi:1"; emit buildah-multi

# ---- an image for another platform only (arm64), and an archive of two sibling images ------
bah push -q --format oci localhost/multi-arm:1 "oci-archive:$out/buildah-foreign.tar:docker.io/library/foreign:1"; emit buildah-foreign
skopeo copy -q "${cs}localhost/stress:base" "oci:$work/siblings:base:1" >/dev/null
skopeo copy -q "${cs}localhost/multi-arm:1" "oci:$work/siblings:arm:1" >/dev/null
tar -C "$work/siblings" -cf "$out/skopeo-siblings.tar" .; emit skopeo-siblings

# ---- docker.io: docker load + docker save through a private dockerd ------------------------
if command -v dockerd >/dev/null 2>&1; then
    dr=$work/docker
    mkdir -p "$dr/data" "$dr/exec"
    sock=$dr/docker.sock
    dockerd --data-root "$dr/data" --exec-root "$dr/exec" --pidfile "$dr/pid" -H "unix://$sock" \
        --storage-driver vfs --bridge none --iptables=false --ip-masq=false --ip-forward=false \
        --containerd-namespace tpcm-corpus --containerd-plugins-namespace tpcm-corpus-p \
        >"$dr/log" 2>&1 &
    dpid=$!
    # However this script ends, the daemon (and the containerd it started) goes, and so do the
    # mounts it made under the work directory.
    stop_docker() {
        kill $dpid 2>/dev/null || true
        wait $dpid 2>/dev/null || true
        { grep -o " $work[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        return 0
    }
    trap stop_docker EXIT
    for _ in $(seq 1 200); do
        /usr/bin/docker -H "unix://$sock" version >/dev/null 2>&1 && break
        kill -0 $dpid 2>/dev/null || break
        sleep 0.1
    done
    if /usr/bin/docker -H "unix://$sock" version >/dev/null 2>&1; then
        D() { /usr/bin/docker -H "unix://$sock" "$@"; }
        D load -q -i "$out/buildah-docker.tar" >/dev/null
        D save -o "$out/docker-save.tar" stress:1; emit docker-save
        D import "$gt/l1.tar" dockerimport:1 >/dev/null
        D save -o "$out/docker-import.tar" dockerimport:1; emit docker-import
    else
        echo "corpus: dockerd did not start here; docker archives skipped" >&2
        tail -5 "$dr/log" >&2 || true
    fi
fi
