#!/usr/bin/env bash
# Issue #18, item 6: every chapter on the full profile on a GPU, the time of each, and the executed notebooks back.
# Prepared for the device tool (one H100 or H200; no internet there; 15 minutes of device time a session):
#
#   here:   bash benchmarks/gpu/fetch_wheels.sh
#   device: run(command="bash benchmarks/gpu/full_profile.sh", carry=[".whl"], timeout_s=590)
#           to split it over two calls: FILES='^0[0-7]' in the first command, FILES='^(0[89]|1|9|index)' in the second
#           (a regex on the notebook's file name, nbdev-test's --file-re)
#
# It installs the wheels into /tmp/site, runs `nbdev-test --timing --flags slow --save` (the main job included) with FRACTURE_PROFILE=full on the built-in
# synthetic data (../shared does not travel), and leaves in $OUT: gpu.txt (device, torch), full_profile.log (the
# per-notebook times, failures, wall time) and executed_nbs.tgz (the notebooks that passed, with their outputs: each
# chapter's headline figures). Read them, then put a row per chapter in the README (time, headline metric).
# Here, for a dry run of the mechanics on the CPU: SKIP_WHEELS=1 PROFILE=quick FILES='^0[0-2]' OUT=/tmp/fp bash ...
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/full_profile_out}; mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ]; then
  [ -d .whl ] || { echo "no .whl/: run benchmarks/gpu/fetch_wheels.sh here first, and carry .whl"; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import torch, fracture_course; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '| fracture_course', fracture_course.__version__)"; } | tee "$OUT/gpu.txt"
export FRACTURE_PROFILE=${PROFILE:-full} FRACTURE_DATASET=synthetic TQDM_DISABLE=1 PYTHONUNBUFFERED=1
start=$(date +%s)
nbdev-test --n-workers "${WORKERS:-4}" --timing --flags slow --save ${FILES:+--file-re "$FILES"} 2>&1 | tee "$OUT/full_profile.log"
status=${PIPESTATUS[0]}
echo "profile $FRACTURE_PROFILE, ${WORKERS:-4} workers, ${FILES:-every notebook}: wall $(( $(date +%s) - start )) s, nbdev-test exit $status" | tee -a "$OUT/full_profile.log"
tar czf "$OUT/executed_nbs.tgz" nbs/*.ipynb
ls -la "$OUT"
exit "$status"
