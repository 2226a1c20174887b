#!/usr/bin/env bash
# Stops every lab VM started from this checkout: reads each VM's pidfile and
# ends that qemu process only (TERM, then KILL after a grace period).
# Safe to run any number of times.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LAB_DIR=${LAB_DIR:-$REPO/.lab}

is_lab_qemu() {
  local pid=$1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'qemu-system-x86_64.*-name lab:'
}

shopt -s nullglob
for pidfile in "$LAB_DIR"/vms/*/qemu.pid; do
  vm=$(basename "$(dirname "$pidfile")")
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ -n $pid ]] && is_lab_qemu "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      is_lab_qemu "$pid" || break
      sleep 0.2
    done
    if is_lab_qemu "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "down: stopped $vm (pid $pid)" >&2
  fi
  rm -f "$pidfile"
done
