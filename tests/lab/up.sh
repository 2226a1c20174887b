#!/usr/bin/env bash
# Boots lab VMs from the cached Debian 12 image (building it first when
# needed), waits until each answers SSH, and writes an Ansible inventory.
#
#   tests/lab/up.sh                 # two VMs: lab-cp-01 and lab-gpu-01
#   tests/lab/up.sh lab-cp-01       # one VM
#
# Each VM: software emulation (no KVM), 1 vCPU, $LAB_MEMORY MiB of memory,
# a qcow2 overlay on the base image, user-mode networking with SSH forwarded
# to 127.0.0.1 only. Inventory: $LAB_DIR/inventory/hosts.yml. On any failure
# the VMs started so far are stopped again. Stop them with tests/lab/down.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export LAB_DIR=${LAB_DIR:-$REPO/.lab}
LAB_MEMORY=${LAB_MEMORY:-1280}
LAB_SSH_BASE_PORT=${LAB_SSH_BASE_PORT:-22201}
LAB_BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-600}
# The emulated CPU model. A plain x86-64 CPU emulates fastest under TCG:
# with "max", glibc and Python pick AVX2 code paths that TCG runs slowly.
LAB_CPU=${LAB_CPU:-qemu64}

if [[ $# -gt 0 ]]; then
  VMS=("$@")
else
  read -r -a VMS <<<"${LAB_VMS:-lab-cp-01 lab-gpu-01}"
fi

log() { echo "up: $*" >&2; }

on_error() {
  log "failed; stopping the VMs started so far"
  "$HERE/down.sh"
}
trap on_error ERR

IMAGE=$("$HERE/build-image.sh")
KEY=$LAB_DIR/ssh/id_ed25519
# Older images (from an earlier package list) are not needed any more.
for old in "$LAB_DIR"/image/*/; do
  old=${old%/}
  [[ -L $old || $old == "$IMAGE" || $(basename "$old") == build-* ]] && continue
  [[ -f $old/image.json ]] && rm -rf "$old"
done

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Stop leftovers of an earlier run first, so ports and disks are free.
"$HERE/down.sh"

declare -A PORTS
port=$LAB_SSH_BASE_PORT
for vm in "${VMS[@]}"; do
  while ! port_free "$port"; do port=$((port + 1)); done
  PORTS[$vm]=$port
  dir=$LAB_DIR/vms/$vm
  rm -rf "$dir"
  mkdir -p "$dir"
  qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE/base.qcow2" "$dir/disk.qcow2"
  qemu-system-x86_64 \
    -name "lab:$vm" \
    -nodefaults \
    -machine pc,accel=tcg \
    -cpu "$LAB_CPU" \
    -smp 1 \
    -m "$LAB_MEMORY" \
    -kernel "$IMAGE/vmlinuz" \
    -initrd "$IMAGE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 lab.hostname=$vm" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
    -netdev "user,id=net0,hostname=$vm,hostfwd=tcp:127.0.0.1:$port-:22" \
    -device virtio-net-pci,netdev=net0 \
    -device virtio-rng-pci \
    -display none \
    -serial "file:$dir/console.log" \
    -pidfile "$dir/qemu.pid" \
    -daemonize
  echo "$port" >"$dir/ssh_port"
  log "booting $vm (ssh 127.0.0.1:$port, console $dir/console.log)"
  port=$((port + 1))
done

SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=5 -i "$KEY")
start=$(date +%s)
for vm in "${VMS[@]}"; do
  until ssh "${SSH_OPTS[@]}" -p "${PORTS[$vm]}" ansible@127.0.0.1 true 2>/dev/null; do
    pid=$(cat "$LAB_DIR/vms/$vm/qemu.pid")
    if [[ ! -d /proc/$pid ]]; then
      log "$vm: qemu exited; last console lines:"
      tail -n 20 "$LAB_DIR/vms/$vm/console.log" >&2 || true
      false
    fi
    if (( $(date +%s) - start > LAB_BOOT_TIMEOUT )); then
      log "$vm: no SSH after ${LAB_BOOT_TIMEOUT}s; last console lines:"
      tail -n 20 "$LAB_DIR/vms/$vm/console.log" >&2 || true
      false
    fi
    sleep 2
  done
  log "$vm answers SSH after $(( $(date +%s) - start ))s"
done

# The inventory: the same group layout as a real data centre (inventory/dc-fra).
INV=$LAB_DIR/inventory
rm -rf "$INV"
mkdir -p "$INV/group_vars"
host_lines() {
  # $1: "cp" for control-plane VMs, "gpu" for the rest; $2: indentation
  local kind=$1 indent=$2 vm found=0 n=0
  for vm in "${VMS[@]}"; do
    n=$((n + 1))
    if [[ ($kind == cp && $vm == *-cp-*) || ($kind == gpu && $vm != *-cp-*) ]]; then
      # BMC: an address from TEST-NET-2 (RFC 5737); nothing contacts it.
      echo "$indent$vm: {ansible_host: 127.0.0.1, ansible_port: ${PORTS[$vm]}, gpufleet_rack: lab0$([[ $kind == cp ]] && echo 1 || echo 2), gpufleet_bmc_address: 198.51.100.$n}"
      found=1
    fi
  done
  return $((1 - found))
}
cp_hosts=$(host_lines cp "        " || true)
gpu_hosts=$(host_lines gpu "            " || true)
{
  echo "# Written by tests/lab/up.sh for the VMs it booted."
  echo "all:"
  echo "  children:"
  echo "    control_plane:"
  if [[ -n $cp_hosts ]]; then echo "      hosts:"; echo "$cp_hosts"; else echo "      hosts: {}"; fi
  echo "    gpu:"
  echo "      children:"
  echo "        lab_gpu:"
  if [[ -n $gpu_hosts ]]; then echo "          hosts:"; echo "$gpu_hosts"; else echo "          hosts: {}"; fi
} >"$INV/hosts.yml"
cp "$HERE/inventory/group_vars/"*.yml "$INV/group_vars/"
cat >>"$INV/group_vars/all.yml" <<VARS

# Connection details of this lab run.
ansible_ssh_private_key_file: $KEY
ansible_ssh_common_args: >-
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
VARS
trap - ERR
log "inventory written to $INV/hosts.yml"
echo "$INV"
