#!/usr/bin/env bash
# The README's install on a fresh Debian 12: a minimal root made by debootstrap (no libtorch, no compiler,
# no Python), with only this machine's Node.js and npm copied in (what a fresh machine of this kind starts
# with). Inside it, as a user would: the README's first install line with this checkout's packed tarball for
# `pirl` — `apt-get install -y libtorch-dev libopenblas0-pthread && npm install <tarball>` — then
# `npx pirl info` and a two-step training run from the consumer project. Needs root and Debian's and npm's
# registries; ~10 minutes the first time (the root is kept in $FRESH_ROOT and reset between runs with
# the marker below).
#
#   bash .ci/fresh-install.sh            # builds the prebuild (npm run prebuild), packs, checks
#   env: FRESH_ROOT (default /var/tmp/pirl-fresh-root), MIRROR (default http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${FRESH_ROOT:-/var/tmp/pirl-fresh-root}
mirror=${MIRROR:-http://deb.debian.org/debian}
log() { printf '%s fresh-install: %s\n' "$(date +%T)" "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "fresh-install: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap > /dev/null || apt-get install -y debootstrap > /dev/null

# A pristine base, made once and copied for each run, so that no earlier run's packages count.
base="$rootfs.base"
if [ ! -f "$base/.pirl-base-complete" ]; then
  log "debootstrap bookworm into $base"
  rm -rf "$base"
  debootstrap --variant=minbase bookworm "$base" "$mirror" > /tmp/pirl-fresh-debootstrap.log 2>&1 ||
    { tail -20 /tmp/pirl-fresh-debootstrap.log >&2; exit 1; }
  touch "$base/.pirl-base-complete"
fi

unmount() { for m in dev/pts dev proc sys; do umount -l "$rootfs/$m" 2> /dev/null || true; done; }
trap unmount EXIT
unmount
rm -rf "$rootfs"
cp -a "$base" "$rootfs"

# Node.js and npm as this machine has them (the fresh machine's own), and DNS.
cp "$(command -v node)" "$rootfs/usr/bin/node"
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$rootfs/usr/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/bin/npx"
# The machine's network set-up: DNS, and the certificate authorities and npm configuration its registries
# need (an egress proxy may present its own CA).
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/usr/etc"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Local CAs too, so that the bundle keeps them when a package's install regenerates it.
if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"; fi
for rc in /usr/etc/npmrc /etc/npmrc /root/.npmrc; do if [ -f "$rc" ]; then cp "$rc" "$rootfs$rc"; fi; done
for m in proc sys dev dev/pts; do mount --bind "/$m" "$rootfs/$m"; done

log "npm run prebuild and npm pack (this checkout)"
(cd "$here" && npm run --silent prebuild >&2 && npm pack --silent --pack-destination "$rootfs/tmp" >&2)
tarball=$(cd "$rootfs/tmp" && ls -t pirl-*.tgz | head -1)

log "in the fresh root: the README's install line, then pirl info and two training steps"
chroot "$rootfs" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin TERM=dumb \
  NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt /bin/bash -euo pipefail -c "
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  for tool in g++ c++ cmake python3; do if command -v \$tool > /dev/null; then echo \"unexpected: \$tool on the fresh root\" >&2; exit 1; fi; done
  mkdir -p /root/app && cd /root/app && npm init -y > /dev/null
  start=\$(date +%s)
  apt-get install -y -qq libtorch-dev libopenblas0-pthread > /tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }
  npm install --no-audit --no-fund /tmp/$tarball
  echo \"install line: \$(( \$(date +%s) - start )) s\"
  npx pirl info
  node -e \"
    const pirl = require('pirl');
    (async () => {
      const n = 16, side = 16, pixels = new Uint8Array(n * side * side * 3);
      for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) % 251;
      const data = new pirl.ArrayDataset(pixels, [n, side, side, 3]);
      const trainer = await pirl.Trainer.create(data, { model: { arch: 'resnet18', stem: 'small', width: 0.125, embeddingDim: 16 },
        sampler: { imageSize: 16, jigsawSize: 18, patchSize: 6 }, loss: { negatives: 8 }, batchSize: 8, epochs: 1 });
      const losses = [];
      await trainer.fit({ callbacks: { onBatchEnd: (l) => void losses.push(l.loss) } });
      if (losses.length !== 2 || !losses.every(Number.isFinite)) throw new Error('expected two finite losses, got ' + losses);
      console.log('two training steps from the consumer: losses ' + losses.map((l) => l.toFixed(4)).join(', '));
    })().catch((e) => { console.error(e); process.exit(1); });
  \"
"
log "passed"
