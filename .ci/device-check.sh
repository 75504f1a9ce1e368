#!/usr/bin/env bash
# The GPU check, one prepared run on the offline GPU host (../shared/device/README.md): build against the
# host's PyTorch libtorch (CUDA kernels included); make the prebuild (brought back as $OUT/prebuild.tgz:
# `tar -xzf prebuild.tgz` in the project root adds prebuilds/linux-x64/torch-X.Y-cuNNN/) and load it as a
# user's install would; run the native CUDA cases and the jest suites that exercise CUDA; bench:gpu (its
# JSON rewritten after every case, the issue's targets first); bench:data; the native CPU cases. Most
# telling first: a run cut short keeps it.
# Logs and JSON go to $OUT (default: device-out/); each stage has its own time limit so the whole stays
# well under 10 minutes, and a failed stage does not stop the next.
#
# Here:      bash .ci/device-pack.sh   (then the device tool, carrying .device and dist)
# There:     bash .ci/device-check.sh
# On a CPU:  DEVICE_CHECK_DRY=1 bash .ci/device-check.sh   (the same stages against the local build, CUDA parts skipped)
# A rerun:   DEVICE_CHECK_STAGES="build native-cuda bench-gpu" bash .ci/device-check.sh   (those stages only)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${OUT:-device-out}" && cd "${OUT:-device-out}" && pwd)
summary="$OUT/summary.txt"
: > "$summary"
rm -f "$OUT"/*.log  # a reused output folder: only this run's logs are read
started=$(date +%s)
# The benchmarks load the dist/ that device-pack.sh built and the device tool carried: no device time on tsc.
[ -f dist/index.js ] && export PIRL_DIST_BUILT=1

# The device tool kills a command at 600 s and then returns only what $OUT holds: the stages share a budget
# (DEVICE_CHECK_BUDGET, default 560 s) so that the check always ends, and packs its logs, before that.
budget=${DEVICE_CHECK_BUDGET:-560}
stage() {  # stage NAME SECONDS COMMAND...: runs, logs to $OUT/NAME.log, records status and time
  local name=$1 limit=$2 t0 rc left
  shift 2
  if [ -n "${DEVICE_CHECK_STAGES:-}" ] && [[ " $DEVICE_CHECK_STAGES " != *" $name "* ]]; then
    echo "$name: not selected" >> "$summary"
    return 0
  fi
  t0=$(date +%s)
  left=$(( budget - (t0 - started) ))
  if [ "$left" -lt 20 ]; then
    echo "$name: skipped, the ${budget} s budget is spent" | tee -a "$summary"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc, $(( $(date +%s) - t0 )) s" | tee -a "$summary"
  return $rc
}

note() {  # note LOG PATTERN: the last line of LOG matching PATTERN into the summary (a stage that ran)
  [ -f "$OUT/$1" ] && grep -E "$2" "$OUT/$1" | tail -n1 >> "$summary"
  return 0
}

if [ -z "${DEVICE_CHECK_DRY:-}" ]; then
  # The jest suites need the dev dependencies: unpacked first, so unpack.sh keeps them.
  [ -d node_modules ] || tar -xJf .device/node_modules-dev.tar.xz
  # shellcheck disable=SC1091
  source .device/unpack.sh > "$OUT/unpack.log" 2>&1 || { echo "unpack failed" | tee -a "$summary"; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
  export PIRL_GPU_NAME=$(head -n1 "$OUT/gpu.txt" | cut -d, -f1)
  stage build 240 node scripts/build.js --tests --benchmarks
  grep -E "pirl: (CUDA kernels|NCCL)" "$OUT/build.log" >> "$summary"  # NCCL is on only if its header compiled
  # Why NCCL is off: the compiler's errors from CMake's compile of communicator.cpp with NCCL.
  grep -q "pirl: NCCL OFF" "$OUT/build.log" && cp build/nccl-check.log "$OUT/nccl-check.log" 2>/dev/null
  stage libtorch 30 node scripts/libtorch.js
fi
export PIRL_NUM_THREADS=${PIRL_NUM_THREADS:-$(nproc)}
device=cuda
[ -z "${DEVICE_CHECK_DRY:-}" ] || device=cpu  # a dry run smoke-tests bench:gpu and the prebuild on the CPU
# Here a CUDA case that would skip (no kernels, no device, no NCCL) fails: a build that lost CUDA must not pass.
[ "$device" = cpu ] || export PIRL_REQUIRE_CUDA=1

# The prebuild from a bare installed package (dist, scripts, prebuilds; no build/), libtorch found as on a
# user's machine (python3's torch: no CMAKE_PREFIX_PATH, no LD_LIBRARY_PATH), then one training step on $1.
prebuild_load() {
  local project app
  project=$PWD
  app=$(mktemp -d)
  mkdir -p "$app/node_modules/pirl"
  cp -r dist scripts package.json prebuilds "$app/node_modules/pirl/"
  ln -s "$project/node_modules" "$app/node_modules/pirl/node_modules"
  cd "$app" && env -u CMAKE_PREFIX_PATH -u LD_LIBRARY_PATH sh -c \
    "node node_modules/pirl/dist/cli.js info && node '$project/test/fixtures/train-step.js' '$1'"
}
export -f prebuild_load
stage prebuild 120 sh -c "node scripts/prebuild.js && tar -czf '$OUT/prebuild.tgz' prebuilds && ls -lR prebuilds"
stage prebuild-load 90 bash -c "prebuild_load $device"
note prebuild-load.log .

# npm test's runner: a gtest shard per core, 2 threads each (a process per case, as ctest runs them, loaded libtorch 518 times).
native=(env OMP_NUM_THREADS=2 node scripts/test.js --native)
shard_logs() {  # shard_logs STAGE: each shard's whole log beside the stage's (its cases, and a hung one's [ RUN ])
  [ -f "$OUT/$1.log" ] || return 0  # the stage did not run: build/'s logs are an earlier run's
  for log in build/native-shard-*.log; do [ -f "$log" ] && cp "$log" "$OUT/$1-${log#build/}"; done
  return 0
}
# With them the join's cases that only a libtorch 2.x tells (its TCPStore reads some answers with no timeout: deadline.h).
stage native-cuda 120 env GTEST_FILTER='*Cuda*:DistributedJoin.*:Deadline.*' "${native[@]}"
note native-cuda.log "^native suite: .* in "
shard_logs native-cuda
stage jest 150 node node_modules/jest/bin/jest.js --ci test/cuda.test.ts test/device.test.ts
note jest.log "^Tests:"
# DEVICE_CHECK_BENCH_CASES=nce,resnet50-paper@128 measures those only (bench-gpu.js --cases): what an earlier loan left.
bench_gpu_json=bench-gpu${DEVICE_CHECK_BENCH_CASES:+-selected}.json  # a selection is not the whole run's figures
stage bench-gpu 270 sh -c "node scripts/bench-gpu.js --device $device ${DEVICE_CHECK_BENCH_CASES:+--cases '$DEVICE_CHECK_BENCH_CASES'} --out '$OUT/$bench_gpu_json' > '$OUT/bench-gpu.stdout.json'"
# The data pipeline on the host's many cores (issue: >= 3,000 samples/s on 16 at the paper preset).
stage bench-data 120 sh -c "node scripts/bench-data.js --thread-counts 1,$(nproc) > '$OUT/bench-data.json'"
# The CPU cases on pip's libtorch last: they found its oneDNN heap bug once, but tell less than the CUDA stages.
stage native 150 env GTEST_FILTER='-*Cuda*' "${native[@]}"
note native.log "^native suite: .* in "
shard_logs native
echo "total: $(( $(date +%s) - started )) s" | tee -a "$summary"
# The device tool brings back at most 8 files of $OUT: the logs travel as one archive beside
# summary.txt, bench-gpu(-selected).json and prebuild.tgz.
if [ -z "${DEVICE_CHECK_DRY:-}" ]; then
  (cd "$OUT" && tar -czf logs.tgz --remove-files $(ls ./*.log gpu.txt bench-gpu.stdout.json 2>/dev/null))
fi
