#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (qemu for the VM lab,
# debootstrap for its image, promtool for alert rules, redis for cache tests,
# an SSH client and server for the preflight tests, gpg and sudo for the
# Ansible roles' key checks and unprivileged runs). Idempotent and quiet:
# when every package is already installed it does nothing, not even
# `apt-get update`. Run as root (or with passwordless sudo) on Debian 12.
set -euo pipefail

PACKAGES=(
  qemu-system-x86
  qemu-utils
  debootstrap
  e2fsprogs
  prometheus
  redis-server
  openssh-client
  openssh-server
  pciutils
  procps
  iproute2
  gpg
  sudo
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-system-deps: missing packages ${missing[*]} and not root (no passwordless sudo)" >&2
    exit 2
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}" >/dev/null
