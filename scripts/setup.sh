#!/usr/bin/env bash
# Installs everything Ferry needs on a fresh Debian 12 machine: system packages (apt-get update
# once, only when something is missing) and the Python environment in .venv. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the project uses: QEMU and the Debian cloud kernel + busybox for the guest
# images the lab builds, syslinux, mtools, dosfstools, e2fsprogs and fdisk to make its bootable
# disk image (lab/image_disk.py), dnsmasq (and its dhcp_release) for the hosts' DHCP servers,
# socat for the TLS tunnel of a local disk's live copy (agent/drivers/nbd_tunnel.py), iproute2
# and ping for the lab's namespaces, tcpdump for the lab's packet captures, chromium for the
# dashboard's browser tests (tests/ui), and the basics.
SYSTEM_PACKAGES=(
  ca-certificates curl make procps
  iproute2 iputils-ping
  qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static
  syslinux syslinux-common mtools dosfstools e2fsprogs fdisk
  dnsmasq-base dnsmasq-utils socat tcpdump
  chromium
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3 python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != "3.11" ]; then
  echo "setup: Ferry needs Python 3.11; $PYTHON is $version (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,bench]'
  touch "$stamp"
fi
