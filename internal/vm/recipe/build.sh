#!/bin/sh
# Builds the VM image for `make test-vm`: a Debian bookworm root file system
# with systemd, dbus, a Debian kernel and an unprivileged test user with
# lingering, written into an ext4 disk image, plus the kernel and a small
# initrd to boot it directly with qemu.
#
# Usage (as root): build.sh OUT_DIR
# It must run as PID 1 of fresh pid and mount namespaces, which the Go side
# (vm.BuildImage) sets up with unshare; debootstrap and the kernel's scripts
# mount /proc and friends inside the new root, and those mounts must never
# reach the host's mount table.
#
# Environment:
#   NSRUN_VM_HOST_MNTNS   readlink /proc/self/ns/mnt of the host, for the guard
#   NSRUN_VM_MIRROR       Debian mirror (default http://deb.debian.org/debian)
#   NSRUN_VM_RECIPE_DIR   the directory holding this script and guest/
set -eu

die() { echo "nsrun-vm build: $*" >&2; exit 99; }

[ "$$" = 1 ] || die "not PID 1 (pid $$): refusing to mount anything"
[ -n "${NSRUN_VM_HOST_MNTNS:-}" ] || die "host mount namespace id missing"
[ "$(readlink /proc/self/ns/mnt)" != "$NSRUN_VM_HOST_MNTNS" ] ||
	die "still in the host mount namespace: refusing to mount anything"
mount --make-rprivate /

out=${1:?usage: build.sh OUT_DIR}
recipe=${NSRUN_VM_RECIPE_DIR:?}
mirror=${NSRUN_VM_MIRROR:-http://deb.debian.org/debian}
root=$out/rootfs
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

rm -rf "$root"
mkdir -p "$root"

# Only what the tests use: systemd and its user manager, dbus for both
# buses, newuidmap/newgidmap for unprivileged sandboxes, and the tools the
# test workloads are written with (coreutils, util-linux, procps).
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,uidmap,iproute2,util-linux,kmod,procps,initramfs-tools,zstd \
	bookworm "$root" "$mirror"

# No service starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# A small initrd: only what finding the root disk needs.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 > "$root/etc/initramfs-tools/modules"

cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
chroot "$root" apt-get install -y -q --no-install-recommends linux-image-amd64
umount "$root/proc"
rm -f "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/*

# The kernel and initrd boot directly (-kernel/-initrd).
cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"

# The guest.
echo nsrun-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nsrun-vm\n' > "$root/etc/hosts"
: > "$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
chroot "$root" useradd --create-home --user-group --shell /bin/sh --uid 1000 nsrun-test
mkdir -p "$root/var/lib/systemd/linger"
: > "$root/var/lib/systemd/linger/nsrun-test"
grep -q '^nsrun-test:' "$root/etc/subuid" || echo 'nsrun-test:100000:65536' >> "$root/etc/subuid"
grep -q '^nsrun-test:' "$root/etc/subgid" || echo 'nsrun-test:100000:65536' >> "$root/etc/subgid"

# Units that cost boot time under software emulation and that nothing here
# needs: the device manager (the root disk is mounted by the initrd), gettys,
# timers and periodic jobs.
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
	systemd-udev-trigger.service systemd-udev-settle.service \
	getty@.service serial-getty@.service console-getty.service getty.target \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
	fstrim.timer systemd-tmpfiles-clean.timer man-db.timer \
	systemd-timesyncd.service systemd-networkd.service systemd-resolved.service \
	systemd-journal-flush.service systemd-update-utmp.service \
	systemd-random-seed.service systemd-hwdb-update.service \
	ldconfig.service systemd-firstboot.service systemd-machine-id-commit.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
# A fixed machine id keeps systemd from first-boot work on every boot.
echo 6e7372756e2d766d2d6d616368696e65 > "$root/etc/machine-id"

install -m 0644 "$recipe/guest/nsrun-vm.service" "$root/etc/systemd/system/nsrun-vm.service"
install -m 0755 "$recipe/guest/nsrun-vm-run" "$root/usr/local/sbin/nsrun-vm-run"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/nsrun-vm.service "$root/etc/systemd/system/multi-user.target.wants/nsrun-vm.service"

# The disk: ext4 filled from the tree, no loop mount needed.
rm -f "$out/disk.raw"
mkfs.ext4 -q -L nsrun-vm -d "$root" "$out/disk.raw" 2G
rm -rf "$root"
echo "nsrun-vm build: image ready in $out"
