#!/usr/bin/env bash
# The GPU measurement (input feed, Lightning overhead, compile modes) as two prepared runs, each under 5 minutes on a 16-core H200 machine:
#   part "feed" (the default):
#     1. the network alone, then the Lightning overhead, at batch 256 (sections train, lightning),
#     2. the app end to end with decode_on=workers and device vs the network (section app, batch 128);
#   part "modes": eager vs torch.compile vs CUDA graphs at batch 32 and 256 (section modes; each compiled
#     mode and batch size takes a minute or more to compile, so it has a run of its own).
# Each stage has its own time limit, so a slow stage cannot take the others' results with it.
#
# Usage, from the checkout on the GPU machine: bash benchmarks/gpu_measure.sh [RESULTS_DIR] [feed|modes]
# (RESULTS_DIR default: $OUT when set, else gpu_results). Where hydra-core/omegaconf are not installed, their wheels
# are taken from .gpu/whl (a copy of ../shared/gpu, see docs/performance.md "GPU").
set -uo pipefail
out=${1:-${OUT:-gpu_results}}
part=${2:-feed}
if [[ $part != feed && $part != modes ]]; then
    echo "error: part '$part' is not allowed: feed or modes" >&2
    exit 2
fi
mkdir -p "$out"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if ! "$python" -c "import hydra, omegaconf" 2>/dev/null; then
    if ! ls .gpu/whl/*.whl >/dev/null 2>&1; then
        echo "error: hydra-core and omegaconf are missing and .gpu/whl has no wheels: pip install hydra-core omegaconf" >&2
        exit 2
    fi
    "$python" -m pip install -q --no-index --no-deps --target /tmp/mobilenet_pl_site .gpu/whl/*.whl || exit 2
    export PYTHONPATH="/tmp/mobilenet_pl_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

common=(device=cuda precision=bf16 channels_last=true family=v2)  # every stage: the GPU set-up
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
nproc >"$out/cpu_count.txt"

stage() {  # stage NAME SECONDS ARGS...: one benchmark run, its table in NAME.log, its samples in NAME.json
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee "$out/$name.log"
    timeout --signal=INT --kill-after=10 "$limit" "$python" -m mobilenet_pl.benchmark "${common[@]}" "$@" \
        json="$out/$name.json" 2>&1 | tee -a "$out/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status" | tee -a "$out/$name.log"
    [[ $status == 0 ]] || failed+=("$name")
}
failed=()

if [[ $part == feed ]]; then
    stage network_b256 50 sections=[train] batch_size=256 repeats=3
    stage lightning_b256 60 sections=[lightning] batch_size=256 repeats=3
    stage app_b128 150 sections=[app] batch_size=128
else
    stage modes_b32 130 sections=[modes] modes_batches=[32] repeats=3
    stage modes_b256 130 sections=[modes] modes_batches=[256] repeats=3
fi
if ((${#failed[@]})); then
    echo "error: stages that did not finish: ${failed[*]} (see their .log in $out)" >&2
    exit 1
fi
