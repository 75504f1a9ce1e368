#!/usr/bin/env bash
# The README's install on a fresh Debian 12 (.ci/chroot.sh: a debootstrapped root with only Node.js and npm).
# Inside it, as a user would: the README's first install line with this checkout's packed tarball for
# `pirl` — `apt-get install -y libtorch-dev libopenblas0-pthread && npm install <tarball>` — then
# `npx pirl info` and a two-step training run from the consumer project. ~5 minutes (10 the first time).
#
#   bash .ci/fresh-install.sh    (root) builds the prebuild (npm run prebuild), packs, checks
#   env: FRESH_ROOT (default /var/tmp/pirl-fresh-root), MIRROR (default http://deb.debian.org/debian)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/.ci/chroot.sh"
root=${FRESH_ROOT:-/var/tmp/pirl-fresh-root}

fresh_root bookworm "$root"
log "npm run prebuild and npm pack (this checkout)"
(cd "$here" && npm run --silent prebuild >&2 && npm pack --silent --pack-destination "$root/tmp" >&2)
tarball=$(cd "$root/tmp" && ls -t pirl-*.tgz | head -1)

log "in the fresh root: the README's install line, then pirl info and two training steps"
in_root "$root" "
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
