#!/usr/bin/env bash
# Build the demo/test image locally, with no registry: a rootfs holding Debian's static
# busybox with every applet linked, imported into Docker (ARCHITECTURE.md, "Test images").
#   scripts/build-image.sh [TAG]      (default local/busybox:1)
set -euo pipefail
tag="${1:-local/busybox:1}"
bb="${BUSYBOX:-/bin/busybox}"
if ! [ -x "$bb" ]; then
  echo "error: $bb not found; install Debian's busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
if ldd "$bb" >/dev/null 2>&1; then
  echo "error: $bb is dynamically linked; install busybox-static" >&2
  exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,www,root}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
# Link every applet where busybox says it lives (bin/ls, usr/sbin/httpd, ...).
"$bb" --list-full | while read -r path; do
  [ "$path" = "bin/busybox" ] && continue
  mkdir -p "$root/$(dirname "$path")"
  ln -sf /bin/busybox "$root/$path"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '<!doctype html><title>berth</title><h1>hello from berth</h1>\n' >"$root/www/index.html"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' \
  - "$tag" >/dev/null
echo "built $tag"
