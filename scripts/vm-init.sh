#!/bin/busybox sh
# /init of the scripts/vm-test initramfs (busybox-static + a few modules of Debian's kernel).
#
# 1. mount the run's share (9p tag "vmshare"); it is a host directory, so it survives resets
# 2. count this boot in the share; past the allowed number of boots, power off at once
# 3. load the watchdog driver asked for in the share's vm.env
# 4. mount the host's / read-only (9p tag "hostroot"), tmpfs where a system writes
# 5. run the share's vm-cmd.sh there (stdout, stderr and exit code into the share), under the
#    init vm.env's VM_INIT names: sh (this script), busybox (busybox init as PID 1, with the
#    share's vm-inittab lines each run in the host's root) or systemd (systemd as PID 1 in the
#    host's root, the command a runtime unit)
# 6. power off: QEMU exits, and vm-test reads the share
PATH=/bin
/bin/busybox --install -s /bin

say() { echo "vm-init: $*"; }
off() { sync; poweroff -f; sleep 10; }
fail() { say "FATAL: $*"; echo "$*" > /share/vm-init-error; off; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci 9pnet_virtio 9p; do
    modprobe "$m" || { say "FATAL: modprobe $m"; off; }
done
P9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$P9" vmshare /share || { say "FATAL: cannot mount the share"; off; }
. /share/vm.env

boot=$(( $(cat /share/vm-boots 2>/dev/null || echo 0) + 1 ))
echo "$boot" > /share/vm-boots
say "boot $boot of $VM_BOOTS"   # vm-test cuts the console log into boots at this line
[ "$boot" -le "$VM_BOOTS" ] || off

# device-mapper: a suspended dm device makes a process truly unkillable (ham's VM tests)
modprobe dm-mod && modprobe dm-zero || say "modprobe dm-mod dm-zero failed"

if [ "$VM_DEVICE" != none ]; then
    # Governors first: a device picks the default governor when it registers.
    modprobe pretimeout_noop; modprobe pretimeout_panic
fi
case "$VM_DEVICE" in
    softdog)  modprobe softdog $VM_MODOPTS ;;
    i6300esb) modprobe i6300esb $VM_MODOPTS ;;
    itco)     modprobe lpc_ich && modprobe iTCO_wdt $VM_MODOPTS ;;
    none)     true ;;
esac || fail "modprobe for $VM_DEVICE ($VM_MODOPTS) failed"

R=/newroot
mount -t 9p -o "$P9,ro,cache=loose" hostroot $R || fail "cannot mount the host's /"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/run
mount -t tmpfs tmpfs $R/tmp
mkdir $R/run/vm-share
mount --bind /share $R/run/vm-share
# the repository at its host path, above the tmpfs just mounted (a clone may live in /tmp)
mkdir -p "$R$VM_REPO" 2>/dev/null
mount -t 9p -o "$P9,ro,cache=loose" repo "$R$VM_REPO" || fail "cannot mount the repository at $VM_REPO"
hostname vm-test

# What runs in the host's root gets a clean environment; vm-run.sh (in the guest's /run, for
# whichever init starts it) runs the command, its output and exit code into the share.
GUEST="/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb \
VM_BOOT=$boot VM_DEVICE=$VM_DEVICE VM_SHARE=/run/vm-share"
S=/run/vm-share
cat > $R/run/vm-run.sh <<END
cut -d' ' -f1 /proc/uptime > $S/boot-$boot.start
$GUEST /bin/sh $S/vm-cmd.sh </dev/null >$S/boot-$boot.out 2>$S/boot-$boot.err
echo \$? > $S/boot-$boot.rc
echo "vm-init: command exited with \$(cat $S/boot-$boot.rc)"
END
case "${VM_INIT:-sh}" in
    sh)
        chroot $R /bin/sh /run/vm-run.sh
        off ;;
    busybox)
        # then busybox's own poweroff: its shutdown lines, SIGTERM and SIGKILL to all, power off
        mkdir -p /etc
        sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
            -e "s|^\([^:]*:[^:]*:[^:]*:\)|\1chroot $R $GUEST |" /share/vm-inittab > /etc/inittab \
            || fail "no vm-inittab in the share"
        echo "::once:/bin/sh -c 'chroot $R /bin/sh /run/vm-run.sh; poweroff'" >> /etc/inittab
        exec /bin/busybox init ;;
    systemd)
        # runtime units (/run/systemd/system is one of systemd's unit directories)
        mkdir -p $R/run/systemd/system
        cat > $R/run/systemd/system/vm-test.target <<END
[Unit]
Description=vm-test: the command
Requires=vm-test.service
After=vm-test.service
END
        cat > $R/run/systemd/system/vm-test.service <<END
[Unit]
Description=vm-test: the command, then power off
DefaultDependencies=no
[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh /run/vm-run.sh
ExecStopPost=/bin/systemctl --no-block poweroff
END
        exec switch_root $R /lib/systemd/systemd --unit=vm-test.target ;;
    *)
        fail "VM_INIT=$VM_INIT: expected sh, busybox or systemd" ;;
esac
