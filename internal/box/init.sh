#!/bin/sh
# The box's first process. It is started by box.Start with CLONE_NEWPID,
# CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC and CLONE_NEWNET, directly inside the
# box's own cgroup (CLONE_INTO_CGROUP), and ends by exec'ing systemd as PID 1.
#
# Stage "outer": refuse unless this is PID 1 of a fresh pid namespace in a
# mount namespace that is not the host's, make every mount private, then
# re-exec through `unshare --cgroup` so that the cgroup namespace root is the
# box's cgroup (unsharing keeps PID 1; clone3 would take the namespace root
# from the parent's cgroup, not from the CLONE_INTO_CGROUP target).
# Stage "inner": private /proc, /sys, /dev, /run, /tmp ..., overlay /etc, the
# minimal unit set, then exec systemd.
#
# Environment (set by box.Start):
#   NSRUN_BOX_SCRIPT   this script, so that stage "inner" can run it again
#   NSRUN_BOX_HOST_MNTNS, NSRUN_BOX_HOST_PIDNS  readlink of the host's namespaces
#   NSRUN_BOX_SHARES   newline-separated host directories to keep visible at
#                      the same path (they may lie below /tmp and friends)
#   NSRUN_BOX_LOG_LEVEL  systemd's log level (info unless set)
#   container          the name systemd reports as its virtualization
set -eu

die() { echo "nsrun-box: $*" >&2; exit 99; }

stage=${1:-outer}

# Guard for every stage: nothing below may run in the host's namespaces.
[ "$$" = 1 ] || die "not PID 1 (pid $$): refusing to mount anything"
[ -n "${NSRUN_BOX_HOST_MNTNS:-}" ] && [ -n "${NSRUN_BOX_HOST_PIDNS:-}" ] ||
	die "host namespace ids missing"
[ "$(readlink /proc/self/ns/mnt)" != "$NSRUN_BOX_HOST_MNTNS" ] ||
	die "still in the host mount namespace: refusing to mount anything"
[ "$(readlink /proc/self/ns/pid)" != "$NSRUN_BOX_HOST_PIDNS" ] ||
	die "still in the host pid namespace: refusing to mount anything"

if [ "$stage" = outer ]; then
	# Nothing mounted from here on may propagate to the host.
	mount --make-rprivate /
	exec unshare --cgroup -- /bin/sh -c "$NSRUN_BOX_SCRIPT" nsrun-box-init inner
fi

# /run first: the staging area for shares and the console must exist before
# /tmp and friends are covered.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/nsrun-box/share /run/nsrun-box/dev
i=0
printf '%s\n' "${NSRUN_BOX_SHARES:-}" | while IFS= read -r src; do
	[ -n "$src" ] || continue
	[ -d "$src" ] || die "share $src is not a directory"
	mkdir -p "/run/nsrun-box/share/$i"
	mount --rbind "$src" "/run/nsrun-box/share/$i"
	echo "$src" > "/run/nsrun-box/share/$i.path"
	i=$((i + 1))
done

# Fresh /proc, /sys and /dev replace the copies of the host's: detach the
# copies first (this mount namespace only), so the box's mount table does not
# list hidden host mounts such as the hybrid host's cgroup2 at
# /sys/fs/cgroup/unified.
umount -l /proc
mount -t proc -o nosuid,nodev,noexec proc /proc
# The box's PID 1 is real root: keep it away from global kernel state
# (systemd 252 bumps fs.nr_open and fs.file-max at boot).
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro,nosuid,nodev,noexec /proc/sys
if [ -e /proc/sysrq-trigger ]; then
	mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
	mount -o remount,bind,ro /proc/sysrq-trigger
fi
# A second proc with nothing mounted over it. The kernel lets a user
# namespace mount a new proc only when one of its mount namespace's proc
# mounts is fully visible (fs/namespace.c mount_too_revealing); the
# read-only /proc/sys above hides part of /proc, so without this one no
# unprivileged sandbox in the box could have its own /proc. Only the box's
# root can write through it; systemd does not look here.
mkdir -p -m 0700 /run/nsrun-box/visible-proc
mkdir -p /run/nsrun-box/visible-proc/proc
mount -t proc -o nosuid,nodev,noexec proc /run/nsrun-box/visible-proc/proc
umount -l /sys
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup

# A private /dev: the host's devtmpfs and console stay untouched. The console
# is the pty box.Start handed us as stdout.
D=/run/nsrun-box/dev
mount -t tmpfs -o mode=0755,nosuid tmpfs "$D"
for n in null zero full random urandom tty kvm fuse net/tun; do
	[ -c "/dev/$n" ] || continue
	mkdir -p "$(dirname "$D/$n")"
	: > "$D/$n"
	mount --bind "/dev/$n" "$D/$n"
done
mkdir -p "$D/pts" "$D/shm" "$D/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$D/pts"
ln -s pts/ptmx "$D/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$D/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$D/mqueue"
: > "$D/console"
mount --bind /proc/self/fd/1 "$D/console"
ln -s /proc/self/fd "$D/fd"
ln -s /proc/self/fd/0 "$D/stdin"
ln -s /proc/self/fd/1 "$D/stdout"
ln -s /proc/self/fd/2 "$D/stderr"
umount -l /dev
mount --move "$D" /dev

# Everything systemd, useradd or a test writes lands on tmpfs or an overlay.
for d in /tmp /var/tmp; do
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"
done
for d in /home /var/log /var/lib/systemd /var/cache; do
	[ -d "$d" ] || continue
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$d"
done
mkdir -p /run/nsrun-box/etc
mount -t tmpfs -o mode=0755 tmpfs /run/nsrun-box/etc
mkdir -p /run/nsrun-box/etc/upper /run/nsrun-box/etc/work
mount -t overlay -o lowerdir=/etc,upperdir=/run/nsrun-box/etc/upper,workdir=/run/nsrun-box/etc/work overlay /etc
echo nsrun-box > /etc/hostname # systemd sets the (private) hostname from it

# Shares come back at their own paths, now that the tmpfs are in place.
for p in /run/nsrun-box/share/*.path; do
	[ -e "$p" ] || continue
	dst=$(cat "$p")
	mkdir -p "$dst"
	mount --move "${p%.path}" "$dst"
done

# The unit set. SYSTEMD_UNIT_PATH replaces the whole search path, so no unit
# from /etc or /usr/lib is loaded unless it is linked here: sysinit.target's
# units (systemd-tmpfiles-setup wipes /tmp, systemd-sysctl, -binfmt and
# -modules-load change the kernel) are simply not part of the box.
U=/run/systemd/system
mkdir -p "$U" /run/systemd/system-generators /run/systemd/user
for g in /usr/lib/systemd/system-generators/*; do
	[ -e "$g" ] && ln -sf /dev/null "/run/systemd/system-generators/${g##*/}"
done
for u in sockets.target timers.target paths.target slices.target basic.target \
	shutdown.target umount.target final.target poweroff.target exit.target \
	systemd-poweroff.service systemd-exit.service \
	user@.service user-runtime-dir@.service; do
	ln -s "/usr/lib/systemd/system/$u" "$U/$u"
done
unit() { cat > "$U/$1"; }
unit system.slice <<-'EOF'
	[Unit]
	Description=System Slice
	EOF
unit user.slice <<-'EOF'
	[Unit]
	Description=User and Session Slice
	EOF
unit sysinit.target <<-'EOF'
	[Unit]
	Description=System Initialization (empty in the nsrun box)
	EOF
unit nsrun-box.target <<-'EOF'
	[Unit]
	Description=nsrun test box
	Requires=dbus.socket
	After=dbus.socket
	EOF
unit dbus.socket <<-'EOF'
	[Unit]
	Description=D-Bus System Message Bus Socket
	DefaultDependencies=no
	[Socket]
	ListenStream=/run/dbus/system_bus_socket
	EOF
unit dbus.service <<-'EOF'
	[Unit]
	Description=D-Bus System Message Bus
	DefaultDependencies=no
	Requires=dbus.socket
	[Service]
	ExecStart=/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
	EOF
# There is no logind in the box, so pam_systemd cannot hand the user manager
# its runtime directory: say it here.
mkdir -p "$U/user@.service.d"
cat > "$U/user@.service.d/nsrun-box.conf" <<-'EOF'
	[Service]
	Environment=XDG_RUNTIME_DIR=/run/user/%i
	EOF
# User managers read the stock user units; keep their tmpfiles away too.
for u in systemd-tmpfiles-setup.service systemd-tmpfiles-clean.timer systemd-tmpfiles-clean.service; do
	ln -s /dev/null "/run/systemd/user/$u"
done

unset NSRUN_BOX_SCRIPT NSRUN_BOX_LOG_LEVEL NSRUN_BOX_SHARES NSRUN_BOX_HOST_MNTNS NSRUN_BOX_HOST_PIDNS
export SYSTEMD_UNIT_PATH=/run/systemd/system.control:/run/systemd/transient:/run/systemd/system
exec /usr/lib/systemd/systemd --unit=nsrun-box.target --log-target=console \
	--log-level="${NSRUN_BOX_LOG_LEVEL:-info}" --show-status=no
