#!/usr/bin/env bash
# Installs the Debian (bookworm) packages that tpcm's tests, benches and demo need, and only those
# that are missing: containerd, runc, containernetworking-plugins, iptables and iproute2 (the
# bridge network for published ports), protobuf-compiler (protoc, for the gRPC code) and
# libprotobuf-dev (the well-known .proto files the gNOI protos import), busybox-static
# (the fixture images are built from its /bin/busybox), skopeo (reference tool for archive checks),
# openssl and ca-certificates (https tests), docker-registry and apache2-utils (the registry tests'
# server and its htpasswd file), openssh-server and openssh-client (the scp/sftp tests' sshd;
# ssh-keygen; the server side of scp), bsdutils and systemd (script(1) and systemd-analyze for
# tests), the differential import test's tools (buildah, podman, umoci, docker.io, attr, acl,
# libcap2-bin), a C toolchain only if no `cc` is present (with glibc's static library for the
# confinement probe and the plugin tests' programs), tini (its static build is what --init
# runs), python3-venv and binutils for building and checking the Debian package, and strace
# (the durable-import test). Safe to
# re-run; runs `apt-get update` at most once,
# and only when something must be installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
{ have_cmd containerd && have_cmd ctr && have_cmd containerd-shim-runc-v2; } || missing+=(containerd)
have_cmd runc || missing+=(runc)
# Published ports (gNOI StartContainer ports, --args -p) use the CNI bridge, host-local, loopback
# and portmap plugins; portmap drives iptables, namespaces are made with ip netns.
[ -x /usr/lib/cni/portmap ] || missing+=(containernetworking-plugins)
have_cmd iptables || missing+=(iptables)
have_cmd ip || missing+=(iproute2)
have_cmd protoc || missing+=(protobuf-compiler)
# The gNOI protos import protobuf's well-known types (descriptor, timestamp, any).
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
# The dynamic `busybox` package also provides /bin/busybox, but fixtures need the static one.
have_pkg busybox-static || missing+=(busybox-static)
have_cmd skopeo || missing+=(skopeo)
# The https tests make their CA with openssl, serve with `openssl s_server`, and trust the CA
# through the system store, as an operator would.
have_cmd openssl || missing+=(openssl)
have_cmd update-ca-certificates || missing+=(ca-certificates)
# Registry pulls are tested (and benchmarked) against the distribution registry with htpasswd auth.
have_cmd docker-registry || missing+=(docker-registry)
have_cmd htpasswd || missing+=(apache2-utils)
# scp and sftp are tested against OpenSSH; `scp -f` on the server is openssh-client's scp.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ have_cmd ssh-keygen && have_cmd scp; } || missing+=(openssh-client)
# The terminal progress test runs tpcm under script(1); unit files are checked with
# systemd-analyze (systemd need not be running).
have_cmd script || missing+=(bsdutils)
have_cmd systemd-analyze || missing+=(systemd)
# The differential import test (tests/import_differential.rs) builds its corpus with the real
# tools: buildah, podman, skopeo and umoci (vfs driver, no daemon), GNU tar, docker.io's dockerd on
# a private socket; attr, acl and libcap2-bin set the xattrs, ACLs and capabilities it stresses.
have_cmd buildah || missing+=(buildah)
have_cmd podman || missing+=(podman)
have_cmd umoci || missing+=(umoci)
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
have_cmd setfattr || missing+=(attr)
have_cmd setfacl || missing+=(acl)
have_cmd setcap || missing+=(libcap2-bin)
have_cmd cc || missing+=(build-essential pkg-config)
# The confinement tests link their probe statically (glibc's libc.a).
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)
# --init runs Debian's static tini (tini-static) as the TPC's PID 1.
[ -x /usr/bin/tini-static ] || missing+=(tini)
# The Debian package (scripts/package.sh): cargo-zigbuild and zig go into a Python virtual
# environment; tests/package.rs reads the binary's symbol versions with objdump and readelf.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
{ have_cmd objdump && have_cmd readelf; } || missing+=(binutils)
# The durable-import test watches tpcm's syncfs calls with strace.
have_cmd strace || missing+=(strace)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all required packages are present"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; run as root:" >&2
    echo "    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
