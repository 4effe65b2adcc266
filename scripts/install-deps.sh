#!/bin/bash
# Install what nbd-replicator needs to build and test on Debian 12 (root).
# Only packages that are missing are installed.
set -eu
PKGS="autoconf automake libtool pkg-config make gcc libc6-dev perl
      nbdkit nbdkit-plugin-dev nbdkit-plugin-python libnbd-dev libnbd-bin python3-libnbd
      liburing-dev libconfig-dev libjson-c-dev libiscsi-dev libiscsi-bin
      tgt fio socat fuse3 qemu-utils e2fsprogs util-linux iproute2 procps
      clang libclang-rt-14-dev python3-prometheus-client systemd strace gdb
      openssl python3-yaml postgresql"
missing=
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
  fi
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi
