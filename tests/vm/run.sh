#!/bin/bash
# The VM suite: the real kernel and the real systemd, which this project's machines cannot give
# (their cgroup2 mount has no memory, cpu or pids controller).
#
#  1. builds a Debian bookworm root with systemd and Debian's cloud kernel (debootstrap, from
#     the mirror in the machine's apt sources), cached in target/vm/base;
#  2. installs the freshly built project into a copy of it with `make install`, plus the test
#     fixtures and the driver (tests/vm/driver.sh) as a systemd service;
#  3. makes an ext4 image of it (mkfs.ext4 -d, no loop mount) and boots it with
#     qemu-system-x86_64 -accel tcg, systemd as PID 1;
#  4. reads the driver's results from the serial console, and exits non-zero unless every check
#     passed.
#
# Run on its own: tests/vm/run.sh (as root). IRONCLAW_VM_DIR moves the work directory.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${IRONCLAW_VM_DIR:-$REPO/target/vm}
BASE=$WORK/base
ROOT=$WORK/root
IMAGE=$WORK/root.img
SERIAL=$WORK/serial.log
# The whole boot and test run; TCG boots systemd in about 95 s on these machines.
TIMEOUT=${IRONCLAW_VM_TIMEOUT:-900}

log() { echo "vm-suite: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    if [ "${IRONCLAW_TEST_SKIP_PRIVILEGED:-}" = 1 ]; then
        log "SKIPPED: needs root (debootstrap, the image, qemu); IRONCLAW_TEST_SKIP_PRIVILEGED=1"
        exit 0
    fi
    log "needs root (debootstrap, the image, qemu); set IRONCLAW_TEST_SKIP_PRIVILEGED=1 to skip it explicitly"
    exit 1
fi

# Host tools, from Debian's registry when missing.
missing=()
for tool in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs; do
    command -v "${tool%%:*}" > /dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" > "$WORK.apt.log" 2>&1 \
        || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# The mirror: the machine's own apt sources, never a hard-coded host.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2> /dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null || true)
[ -n "$mirror" ] || { log "no Debian mirror in /etc/apt/sources.list*"; exit 1; }

mkdir -p "$WORK"
if [ ! -e "$BASE/.complete" ]; then
    log "building the bookworm root from $mirror (cached afterwards)"
    rm -rf "$BASE"
    started=$(date +%s)
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,curl,iproute2,ca-certificates,python3,procps,kmod,e2fsprogs,linux-image-cloud-amd64 \
        bookworm "$BASE" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    log "root built in $(($(date +%s) - started)) s"
    touch "$BASE/.complete"
fi

log "installing the project into a copy of the root"
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
# The release code with the test hooks the driver uses (hold a reload, freeze the watchdog),
# built apart from target/release.
make -C "$REPO" --no-print-directory install PROFILE=release-hooks FEATURES=test-hooks DESTDIR="$ROOT" PREFIX=/usr/local \
    > "$WORK/install.log" 2>&1 \
    || { tail -20 "$WORK/install.log"; exit 1; }
cargo build --manifest-path "$REPO/Cargo.toml" --profile release-hooks -p misbehave > "$WORK/fixtures.log" 2>&1 \
    || { tail -20 "$WORK/fixtures.log"; exit 1; }
for fixture in misbehave_native misbehave_throttled misbehave_hoarder; do
    dest=$ROOT/usr/local/lib/ironclaw/plugins/$fixture
    mkdir -p "$dest"
    cp "$REPO/tests/fixtures/plugins/$fixture/plugin.toml" "$dest/"
    cp "$REPO/target/release-hooks/libmisbehave.so" "$dest/"
done
install -D -m 0755 "$REPO/tests/vm/driver.sh" "$ROOT/usr/local/libexec/ironclaw-vm-driver"
install -D -m 0644 "$REPO/tests/vm/mock_upstreams.py" "$ROOT/usr/local/libexec/ironclaw-vm-mocks"
cat > "$ROOT/etc/systemd/system/ironclaw-vm-test.service" << 'EOF'
[Unit]
Description=Ironclaw VM test driver
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/ironclaw-vm-driver
StandardOutput=journal+console
EOF
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/ironclaw-vm-test.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$ROOT/etc/fstab"
echo ironclaw-vm > "$ROOT/etc/hostname"
# No login prompt on the console, nothing waiting for a network that is not there.
ln -sf /dev/null "$ROOT/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service"

log "building the disk image"
rm -f "$IMAGE"
truncate -s 3G "$IMAGE"
mkfs.ext4 -q -F -L root -d "$ROOT" "$IMAGE"

kernel=$(ls "$ROOT"/boot/vmlinuz-* | sort | tail -1)
initrd=$(ls "$ROOT"/boot/initrd.img-* | sort | tail -1)
log "booting $(basename "$kernel") under qemu (TCG), at most $TIMEOUT s"
rm -f "$SERIAL"
started=$(date +%s)
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
    -display none -no-reboot -serial "file:$SERIAL" \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0" \
    -drive "file=$IMAGE,if=virtio,format=raw" || true
log "the VM ran for $(($(date +%s) - started)) s"

grep -a 'IRONCLAW-VM' "$SERIAL" | tr -d '\r' || true
done_line=$(grep -a 'IRONCLAW-VM DONE' "$SERIAL" | tr -d '\r' | tail -1 || true)
if [ -z "$done_line" ]; then
    log "the driver did not finish; the end of the console:"
    tail -40 "$SERIAL" | tr -d '\r'
    exit 1
fi
read -r _ _ passed failed <<< "$done_line"
log "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
