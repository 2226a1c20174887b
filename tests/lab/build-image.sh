#!/usr/bin/env bash
# Builds the Debian 12 base image the lab boots: a debootstrap root file system
# with the packages in packages.txt, an `ansible` user with the lab's SSH key
# and passwordless sudo, turned into a qcow2 disk plus the kernel and initrd
# qemu boots directly. The result is cached under $LAB_DIR/image/<key>/, where
# the key is a hash of packages.txt, this script and the public key; a change
# to any of them builds a new image. Prints the image directory on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LAB_DIR=${LAB_DIR:-$REPO/.lab}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LAB_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
DISK_SIZE=${LAB_DISK_SIZE:-12G}

log() { echo "build-image: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  echo "build-image: debootstrap needs root" >&2
  exit 2
fi

mkdir -p "$LAB_DIR/ssh" "$LAB_DIR/image"
KEY=$LAB_DIR/ssh/id_ed25519
if [[ ! -f $KEY ]]; then
  ssh-keygen -q -t ed25519 -N '' -C lab-ansible -f "$KEY"
fi

mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt" | grep -v '^$')
IMAGE_KEY=$(cat "$HERE/packages.txt" "$HERE/build-image.sh" "$KEY.pub" | sha256sum | cut -c1-16)
OUT=$LAB_DIR/image/$IMAGE_KEY

if [[ -f $OUT/base.qcow2 && -f $OUT/vmlinuz && -f $OUT/initrd.img ]]; then
  log "cached image $IMAGE_KEY"
  ln -sfn "$IMAGE_KEY" "$LAB_DIR/image/current"
  echo "$OUT"
  exit 0
fi

WORK=$LAB_DIR/image/build-$IMAGE_KEY
ROOTFS=$WORK/rootfs
cleanup() {
  for m in dev/pts dev proc sys; do
    mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
  done
}
trap cleanup EXIT
# Never delete a tree that still has something mounted inside it.
if [[ -d $WORK ]]; then
  cleanup
  if grep -q " $WORK/" /proc/mounts; then
    echo "build-image: $WORK still has mounts; unmount them first" >&2
    exit 1
  fi
fi
rm -rf "$WORK"
mkdir -p "$WORK"
START=$(date +%s)

log "debootstrap $SUITE with ${#PACKAGES[@]} packages (key $IMAGE_KEY)"
debootstrap --variant=minbase --components=main,non-free-firmware \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    exit 1
  }

log "configuring the root file system"
cat >"$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main non-free-firmware
deb $MIRROR $SUITE-updates main non-free-firmware
deb $SECURITY_MIRROR $SUITE-security main non-free-firmware
SOURCES

echo lab >"$ROOTFS/etc/hostname"
cat >"$ROOTFS/etc/hosts" <<'HOSTS'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
HOSTS
echo "/dev/vda / ext4 defaults,noatime 0 1" >"$ROOTFS/etc/fstab"
# qemu's user-mode network serves DHCP and DNS at 10.0.2.2/10.0.2.3.
rm -f "$ROOTFS/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$ROOTFS/etc/resolv.conf"
cat >"$ROOTFS/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET

# Each VM gets its name from the kernel command line (lab.hostname=NAME).
cat >"$ROOTFS/usr/local/sbin/lab-hostname" <<'SH'
#!/bin/sh
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    lab.hostname=*) name=${arg#lab.hostname=} ;;
  esac
done
[ -n "$name" ] || exit 0
echo "$name" >/etc/hostname
hostname "$name"
grep -q " $name\$" /etc/hosts || echo "127.0.1.1 $name" >>/etc/hosts
SH
chmod 755 "$ROOTFS/usr/local/sbin/lab-hostname"
cat >"$ROOTFS/etc/systemd/system/lab-hostname.service" <<'UNIT'
[Unit]
Description=Set the host name from the kernel command line
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target sshd.service ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-hostname

[Install]
WantedBy=sysinit.target
UNIT

# The account Ansible logs in with, as on a freshly installed server.
chroot "$ROOTFS" useradd --create-home --shell /bin/bash ansible
install -d -m 700 -o 1000 -g 1000 "$ROOTFS/home/ansible/.ssh"
install -m 600 -o 1000 -g 1000 "$KEY.pub" "$ROOTFS/home/ansible/.ssh/authorized_keys"
echo "ansible ALL=(ALL) NOPASSWD:ALL" >"$ROOTFS/etc/sudoers.d/ansible"
chmod 440 "$ROOTFS/etc/sudoers.d/ansible"
chroot "$ROOTFS" passwd -l root >/dev/null
cat >"$ROOTFS/etc/ssh/sshd_config.d/lab.conf" <<'SSHD'
PasswordAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
SSHD

# Faster boots under software emulation: nothing that runs on a timer.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
mkdir -p "$ROOTFS/etc/systemd/system/getty.target.wants"
chroot "$ROOTFS" systemctl enable systemd-networkd.service lab-hostname.service ssh.service >/dev/null 2>&1
chroot "$ROOTFS" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true

log "refreshing the package lists inside the image"
mount -t proc proc "$ROOTFS/proc"
mount --bind /dev "$ROOTFS/dev"
mount --bind /dev/pts "$ROOTFS/dev/pts"
mount -t sysfs sys "$ROOTFS/sys"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
chroot "$ROOTFS" apt-get -qq update >/dev/null
chroot "$ROOTFS" apt-get -qq clean
echo "nameserver 10.0.2.3" >"$ROOTFS/etc/resolv.conf"
cleanup
rm -f "$ROOTFS"/etc/ssh/ssh_host_*key*
# Host keys are generated on first boot, so each VM has its own (ed25519
# only: an RSA key takes a minute under software emulation).
cat >"$ROOTFS/etc/systemd/system/lab-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOTFS" systemctl enable lab-ssh-hostkeys.service >/dev/null 2>&1

log "writing the disk image"
cp "$ROOTFS"/boot/vmlinuz-* "$WORK/vmlinuz"
cp "$ROOTFS"/boot/initrd.img-* "$WORK/initrd.img"
chmod 644 "$WORK/vmlinuz" "$WORK/initrd.img"
truncate -s "$DISK_SIZE" "$WORK/base.raw"
mkfs.ext4 -q -L labroot -d "$ROOTFS" "$WORK/base.raw"
qemu-img convert -O qcow2 "$WORK/base.raw" "$WORK/base.qcow2"
rm -f "$WORK/base.raw"

mkdir -p "$OUT"
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/base.qcow2" "$OUT/"
cat >"$OUT/image.json" <<JSON
{"key": "$IMAGE_KEY", "suite": "$SUITE", "packages": ${#PACKAGES[@]}, "build_seconds": $(( $(date +%s) - START ))}
JSON
rm -rf "$WORK"
ln -sfn "$IMAGE_KEY" "$LAB_DIR/image/current"
log "image $IMAGE_KEY built in $(( $(date +%s) - START ))s"
echo "$OUT"
