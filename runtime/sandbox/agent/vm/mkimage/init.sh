#!/bin/busybox sh
# gvpn guest init: PID 1 of a VM started by gvpn-runtime --sandbox vm.
#
# Stage 1 (from the initramfs): mount the kernel file systems, load the
# modules listed in /etc/gvpn/modules, and when the kernel command line has
# gvpn.root=DEV (the task package, a squashfs image), mount it read-only
# under a writable tmpfs overlay and switch to it. Stage 2 (in the final
# root): hostname, volumes (gvpn.vol=TAG:PATH, 9p shares), then gvpn-agent
# on gvpn.bridge=ADDR; when the agent exits the VM powers off.
#
# Everything printed here goes to the serial console, which the runtime
# copies into its log and quotes when the guest does not come up.

log() { echo "gvpn-init: $*"; }
fail() {
	echo "gvpn-init: FATAL: $*"
	$B sync
	$B poweroff -f
	exit 1
}

if [ "$1" != stage2 ]; then
	B=/bin/busybox
	export PATH=/usr/sbin:/usr/bin:/sbin:/bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts devpts /dev/pts
	mount -t tmpfs -o mode=1777 tmpfs /dev/shm
	# Plain newlines on the console: the runtime copies it into its log.
	stty -onlcr </dev/console 2>/dev/null
	for m in $(cat /etc/gvpn/modules); do
		insmod /lib/modules/$m.ko || log "insmod $m failed"
	done

	bridge=virtio-serial://gvpn.bridge root= host=golem vols=
	for arg in $(cat /proc/cmdline); do
		case "$arg" in
		gvpn.bridge=*) bridge=${arg#*=} ;;
		gvpn.root=*) root=${arg#*=} ;;
		gvpn.hostname=*) host=${arg#*=} ;;
		gvpn.vol=*) vols="$vols ${arg#*=}" ;;
		esac
	done
	log "kernel $(uname -r), bridge $bridge, root ${root:-initramfs}"

	if [ -n "$root" ]; then
		n=0
		while [ ! -b "$root" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
		mkdir -p /mnt/lower /mnt/rw /mnt/root
		mount -t squashfs -o ro "$root" /mnt/lower || fail "cannot mount the task package ($root) as squashfs"
		mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
		mkdir -p /mnt/rw/upper /mnt/rw/work
		mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /mnt/root ||
			fail "cannot mount the overlay over the task package"
		mkdir -p /mnt/root/.gvpn /mnt/root/proc /mnt/root/sys /mnt/root/dev /mnt/root/tmp /mnt/root/etc
		cp /bin/busybox /usr/bin/gvpn-agent /init /mnt/root/.gvpn/
		for d in proc sys dev; do mount --move /$d /mnt/root/$d; done
		exec switch_root /mnt/root /.gvpn/busybox sh /.gvpn/init stage2 "$bridge" "$host" /.gvpn/gvpn-agent $vols
		fail "switch_root failed"
	fi
	exec /bin/busybox sh /init stage2 "$bridge" "$host" /usr/bin/gvpn-agent $vols
fi

# Stage 2: in the final root.
shift
bridge=$1 host=$2 agent=$3
shift 3
if [ -x /.gvpn/busybox ]; then B=/.gvpn/busybox; else B=/bin/busybox; fi
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
$B mkdir -p /tmp /run
$B mount -t tmpfs -o mode=1777 tmpfs /tmp
$B mount -t tmpfs -o mode=0755 tmpfs /run
$B hostname "$host"
$B ip link set lo up
if ! $B grep -q localhost /etc/hosts 2>/dev/null; then
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>/etc/hosts
fi
for v in "$@"; do
	tag=${v%%:*} dir=${v#*:}
	$B mkdir -p "$dir" || fail "volume $tag: cannot create $dir"
	$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$tag" "$dir" || fail "volume $tag: cannot mount it on $dir"
	log "volume $tag mounted on $dir"
done

log "starting gvpn-agent"
# Through a pipe, not the console itself, so that its log lines carry no
# terminal colours into the runtime's log.
$B mkfifo /run/gvpn-agent.log
$B cat /run/gvpn-agent.log &
$agent --bridge "$bridge" --hosts-file /etc/hosts >/run/gvpn-agent.log 2>&1 &
pid=$!
# As PID 1 the shell also reaps the payload's orphans while it waits.
while :; do
	wait $pid
	rc=$?
	$B kill -0 $pid 2>/dev/null || break
done
log "gvpn-agent exited ($rc); powering off"
$B sync
$B poweroff -f
