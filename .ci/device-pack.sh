#!/usr/bin/env bash
# Packs what the GPU check (.ci/device-check.sh) needs on the offline GPU host: ../shared/device/pack.sh
# (node, GoogleTest's sources, production node_modules), the full node_modules that the jest suites
# need (jest, ts-jest, typescript: ~16 MB as xz) and dist/. Then run the check with the device tool,
# carrying ".device" and "dist": bash .ci/device-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/device/pack.sh
if [ ! -f .device/node_modules-dev.tar.xz ] || [ package-lock.json -nt .device/node_modules-dev.tar.xz ]; then
  scratch=$(mktemp -d)
  cp package.json package-lock.json "$scratch"/
  (cd "$scratch" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
  tar -C "$scratch" -cf - node_modules | xz -T2 -6 > .device/node_modules-dev.tar.xz
  rm -rf "$scratch"
fi
npm run build:ts >/dev/null
du -sh .device dist
