#!/usr/bin/env bash
# Runs one of the README's two commands on a fresh Debian 12, as its user would: debootstraps
# a minimal bookworm (--variant=minbase, plus git) into DIR, clones this repository's HEAD
# into DIR/root/trick (root's home, mode 700, as on a fresh machine), and runs the command
# there as root in a chroot with /proc, /sys and /dev mounted and an empty environment.
#   bash tools/fresh_debian.sh DIR demo    # bash tools/demo.sh
#   bash tools/fresh_debian.sh DIR test    # bash tools/test.sh
# Needs root, debootstrap (apt-get install debootstrap) and deb.debian.org; DIR must not exist
# (about 0.4 GB after debootstrap, 2 to 4 GB after the command). The mounts are undone at the
# end; DIR is kept for a look inside (remove it with rm -rf --one-file-system DIR). Prints the
# command's time and what apt downloaded.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash tools/fresh_debian.sh DIR demo|test" >&2; exit 2; }
dir=$1 what=$2
case "$what" in demo | test) ;; *) echo "error: the command is demo or test, got '$what'" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap and chroot need root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
[ ! -e "$dir" ] || { echo "error: $dir exists; give a new folder" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/.." && pwd)

t0=$SECONDS
debootstrap --variant=minbase --include=git,ca-certificates bookworm "$dir" http://deb.debian.org/debian \
  >"$dir.debootstrap.log" 2>&1 || { echo "error: debootstrap failed, see $dir.debootstrap.log" >&2; exit 1; }
echo "fresh_debian.sh: debootstrap took $((SECONDS - t0)) s"
git clone -q "$repo" "$dir/root/trick"
cp /etc/resolv.conf "$dir/etc/resolv.conf"
undo() { umount -R "$dir/dev" 2>/dev/null || true; umount "$dir/proc" "$dir/sys" 2>/dev/null || true; }
trap undo EXIT
mount -t proc proc "$dir/proc"
mount -t sysfs sys "$dir/sys"
mount --rbind /dev "$dir/dev"
mount --make-rslave "$dir/dev"

t0=$SECONDS
rc=0
chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 /bin/bash -c "cd /root/trick && bash tools/$what.sh" || rc=$?
echo "fresh_debian.sh: bash tools/$what.sh took $((SECONDS - t0)) s, exit status $rc;" \
  "apt downloaded $(du -sh "$dir/var/cache/apt/archives" | cut -f1)"
exit $rc
