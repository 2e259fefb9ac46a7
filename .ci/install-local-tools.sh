#!/bin/sh
# Installs the real tools the build tests use (Debian packages) — the local
# executor's tests, kube-sim's host step runner tests and the end-to-end
# tests of the bundled Tasks — and configures podman/buildah to run
# daemonless as root in a container-like sandbox. Idempotent: safe to run on
# every CI run.
set -eu

# git also serves the tests' repositories over smart HTTP (`git http-backend`,
# behind a small server in crates/test-support); apache2-utils has htpasswd
# for the docker-registry's users; busybox-static is the base of an image
# whose RUN step is cancelled. BuildKit (buildx) has no Debian package: the
# tests expect its absence and say so.
PACKAGES="git buildah podman packer docker-registry apache2-utils busybox-static"

missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

# docker-registry's package starts a system service where systemd runs; the
# tests start their own registries on free ports, so it is not needed.

mkdir -p /etc/containers

# No systemd here: keep podman's events in a file and its cgroups managed
# directly, so it neither warns nor fails looking for journald/systemd.
if [ ! -e /etc/containers/containers.conf ]; then
    cat > /etc/containers/containers.conf <<'EOF'
[engine]
events_logger = "file"
cgroup_manager = "cgroupfs"
EOF
fi

# Pick a storage driver that works here: overlay when the kernel lets us
# mount it, vfs (plain copies, always works) otherwise.
if [ ! -e /etc/containers/storage.conf ]; then
    probe=$(mktemp -d)
    driver=vfs
    mkdir -p "$probe/ctx"
    echo probe > "$probe/ctx/f"
    printf 'FROM scratch\nCOPY f /f\n' > "$probe/ctx/Dockerfile"
    if buildah --root "$probe/root" --runroot "$probe/run" --storage-driver overlay \
        build -q -t localhost/probe "$probe/ctx" >/dev/null 2>&1; then
        driver=overlay
    fi
    buildah --root "$probe/root" --runroot "$probe/run" --storage-driver "$driver" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$probe" 2>/dev/null || true
    cat > /etc/containers/storage.conf <<EOF
[storage]
driver = "$driver"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
    echo "container storage driver: $driver"
fi

for tool in git buildah podman packer docker-registry htpasswd; do
    command -v "$tool" >/dev/null || { echo "missing after install: $tool" >&2; exit 1; }
done
echo "local build tools ready: $(buildah --version | cut -d' ' -f1-3), $(podman --version), packer $(packer --version)"
