#!/usr/bin/env bash
# CI against libtorch 2.x on the CPU: a fresh clone of this checkout's HEAD runs `bash .ci/run` — the apt
# packages, `npm ci` (whose install step, as root, installs Debian's libtorch-dev), the README's test
# command — in a fresh Debian sid root (.ci/chroot.sh), where libtorch-dev is 2.x (2.14 when written).
# What a CUDA host's pip torch 2.x runs is then first run here: the C++20 build, c10d, autocast, the whole
# native and jest suites. ~30 minutes on 2 cores.
#
#   bash .ci/sid-libtorch2.sh    (root)
#   env: SID_ROOT (default /var/tmp/pirl-sid-root), MIRROR (default http://deb.debian.org/debian)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/.ci/chroot.sh"
root=${SID_ROOT:-/var/tmp/pirl-sid-root}

fresh_root sid "$root"
git clone -q "$here" "$root/root/pirl"
log "in the sid root: bash .ci/run (HEAD $(git -C "$here" rev-parse --short HEAD))"
in_root "$root" "apt-get update -qq && apt-get install -y -qq git ca-certificates > /dev/null && cd /root/pirl && bash .ci/run"
log "passed"
