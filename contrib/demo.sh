#!/bin/bash
# make demo: run a command under nsrun and show, from outside, what systemd
# made of it. Where PID 1 is not systemd, everything happens in the nsrun box:
# a real systemd booted as PID 1 of private namespaces (internal/box).
set -euo pipefail
bin=${1:?usage: demo.sh BINDIR}

demo() {
	local nsrun=$1
	echo "== 1. root, system manager: nsrun --slice=demo.slice --unit=nsrun-demo -- sh -c '...; exit 7'"
	set +e
	"$nsrun" --slice=demo.slice --unit=nsrun-demo -- sh -c '
		echo "   workload: pid $$, cgroup $(tail -n1 /proc/self/cgroup | cut -d: -f3)"
		systemctl show -p Id -p Slice -p Delegate -p CollectMode nsrun-demo.scope | sed "s/^/   systemd says: /"
		exit 7'
	rc=$?
	set -e
	echo "   nsrun exited with $rc: the workload's own status"
	sleep 0.3
	echo "   afterwards: $(systemctl show -p LoadState nsrun-demo.scope) (the scope is gone)"

	echo "== 2. a bad value is refused before anything is created: nsrun -p MemoryMax=12Q -- true"
	set +e
	out=$("$nsrun" -p MemoryMax=12Q -- true 2>&1)
	rc=$?
	set -e
	echo "$out" | sed 's/^/   /'
	echo "   exit status $rc"

	echo "== 3. a limit that would not be enforced is refused, not silently dropped:"
	local offered; offered=$(cat /sys/fs/cgroup/cgroup.controllers)
	echo "   nsrun -p MemoryMax=64M -- echo hi   (controllers on this cgroup v2 hierarchy: ${offered:-none})"
	set +e
	out=$("$nsrun" -p MemoryMax=64M -- echo hi 2>&1)
	rc=$?
	set -e
	echo "$out" | sed 's/^/   /'
	echo "   exit status $rc; with --allow-degraded it runs and warns instead"
}

demo_user() {
	local nsrun=$1 user=nsrun-demo
	id -u "$user" >/dev/null 2>&1 || useradd --no-log-init --create-home --user-group --shell /bin/sh "$user"
	local uid; uid=$(id -u "$user")
	systemctl start "user@$uid.service"
	echo "== 4. unprivileged user $user, its own user manager (user@$uid.service)"
	setpriv --reuid="$uid" --regid="$(id -g "$user")" --init-groups -- \
		env -i PATH=/usr/bin:/bin HOME="/home/$user" XDG_RUNTIME_DIR="/run/user/$uid" \
		"$nsrun" --slice=demo.slice --unit=nsrun-demo -- sh -c '
			echo "   workload: uid $(id -u), cgroup $(tail -n1 /proc/self/cgroup | cut -d: -f3)"
			cg=/sys/fs/cgroup$(tail -n1 /proc/self/cgroup | cut -d: -f3)
			echo "   the delegated cgroup is owned by: $(stat -c %U "$cg")"
			systemctl --user show -p Slice -p Delegate nsrun-demo.scope | sed "s/^/   systemd --user says: /"'
}

if [ "${NSRUN_DEMO_INSIDE:-}" = 1 ]; then
	demo "$bin/nsrun"
	demo_user "$bin/nsrun"
	exit 0
fi

if [ "$(cat /proc/1/comm)" = systemd ]; then
	echo "PID 1 is systemd: nsrun talks to it directly."
	if [ "$(id -u)" = 0 ]; then demo "$bin/nsrun"; else
		"$bin/nsrun" --user --slice=demo.slice -- sh -c 'echo "workload in $(tail -n1 /proc/self/cgroup)"'
	fi
	exit 0
fi

echo "PID 1 here is $(cat /proc/1/comm), not systemd: booting the nsrun box (systemd $(/usr/lib/systemd/systemd --version | head -n1 | cut -d' ' -f2) as PID 1 of private namespaces) ..."
[ "$(id -u)" = 0 ] || { echo "the box needs root"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
exec "$bin/nsrun-box" --share="$bin" --share="$here" -- env NSRUN_DEMO_INSIDE=1 "$here/demo.sh" "$bin"
