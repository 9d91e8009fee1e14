#!/bin/sh
# tests/no_proc.sh TRICK: the embedded model loads with no /proc (a chroot or sandbox without
# it mounted): `trick classify` on a sample, with an empty tmpfs over /proc in a mount
# namespace of its own, must say "Sneaker". Exit 77 (CTest: skipped) where this process
# cannot make such a namespace (not root, a container without CAP_SYS_ADMIN, or a chroot,
# where / is not a mount point and cannot be made private).
trick=$1
if ! unshare -m --propagation private true 2> /dev/null; then
  echo "skipped: cannot create a private mount namespace here (unshare -m --propagation private needs root or" \
    "CAP_SYS_ADMIN, and / to be a mount point, which it is not in a chroot)"
  exit 77
fi
exec unshare -m --propagation private sh -c '
  mount -t tmpfs none /proc 2> /dev/null || { echo "skipped: cannot mount a tmpfs over /proc here"; exit 77; }
  [ ! -e /proc/self ] || { echo "FAILED: /proc/self is still there"; exit 1; }
  out=$("$1" classify data/samples/fashion/7_sneaker.png --topk 1 2>&1)
  rc=$?
  echo "$out"
  [ $rc = 0 ] || { echo "FAILED: trick classify exited $rc without /proc"; exit 1; }
  echo "$out" | grep -q "^ *1\. .* 7  *Sneaker$" || { echo "FAILED: the top class is not 7 Sneaker"; exit 1; }
  echo "ok: the embedded model classified the sneaker with no /proc"
' sh "$trick"
