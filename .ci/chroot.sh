# Sourced by the fresh-root checks (.ci/fresh-install.sh, .ci/sid-libtorch2.sh): a Debian root made by
# debootstrap, holding nothing but this machine's Node.js and npm and its network set-up — what a fresh
# machine of this kind starts with. Needs root and Debian's and npm's registries.
#
#   fresh_root SUITE ROOT   a pristine SUITE (bookworm, sid) root at ROOT: debootstrapped once into ROOT.base
#                           and copied from there each time, so that no earlier run's packages count
#   in_root ROOT SCRIPT     runs SCRIPT with bash -euo pipefail in ROOT, with a clean environment
# The mounts are undone on exit.

mirror=${MIRROR:-http://deb.debian.org/debian}
log() { printf '%s %s: %s\n' "$(date +%T)" "$(basename "$0" .sh)" "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "$(basename "$0"): needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap > /dev/null || apt-get install -y debootstrap > /dev/null

mounted_roots=()
unmount_roots() {
  for r in "${mounted_roots[@]}"; do for m in dev/pts dev proc sys; do umount -l "$r/$m" 2> /dev/null || true; done; done
}
trap unmount_roots EXIT

fresh_root() {
  local suite=$1 root=$2 base="$2.base"
  if [ ! -f "$base/.pirl-base-complete" ]; then
    log "debootstrap $suite into $base"
    rm -rf "$base"
    debootstrap --variant=minbase "$suite" "$base" "$mirror" > "/tmp/pirl-debootstrap-$suite.log" 2>&1 ||
      { tail -20 "/tmp/pirl-debootstrap-$suite.log" >&2; exit 1; }
    touch "$base/.pirl-base-complete"
  fi
  for m in dev/pts dev proc sys; do umount -l "$root/$m" 2> /dev/null || true; done
  rm -rf "$root"
  cp -a "$base" "$root"

  # Node.js and npm as this machine has them (the fresh machine's own).
  cp "$(command -v node)" "$root/usr/bin/node"
  local npm_dir
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  mkdir -p "$root/usr/lib/node_modules"
  cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
  # The machine's network set-up: DNS, and the certificate authorities and npm configuration its
  # registries need (an egress proxy may present its own CA) — local CAs too, so that the bundle keeps
  # them when a package's install regenerates it.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mkdir -p "$root/etc/ssl/certs" "$root/usr/etc" "$root/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"; fi
  for rc in /usr/etc/npmrc /etc/npmrc /root/.npmrc; do if [ -f "$rc" ]; then cp "$rc" "$root$rc"; fi; done
  # The archive may be a frozen snapshot whose Release files are past their Valid-Until date (sid's is).
  echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99pirl-snapshot"
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$root/$m"; done
  mounted_roots+=("$root")
}

in_root() {
  chroot "$1" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin TERM=dumb \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt DEBIAN_FRONTEND=noninteractive /bin/bash -euo pipefail -c "$2"
}
