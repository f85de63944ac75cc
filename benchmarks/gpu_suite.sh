#!/usr/bin/env bash
# Issue 31's GPU measurements in one run of under 8 minutes on one H100: the CUDA tests, the table of
# benchmarks/gpu_models.py (llama-3.2-1b shape 4k-262k and gemma-3-1b shape 16k/32k, against transformers
# where it fits), the attention-level ropes against the default rope at 32k and 128k, and the llama shape
# at 512k and 1M tokens. Random checkpoints of the real shapes are written on the machine itself. Where
# FlexAttention runs (the ropes, gemma's sliding layers), two short warm-up lengths compile its kernels,
# shape-generic from the second, before anything is timed.
#
# Every step runs under its own time limit and its failure is recorded, never fatal: the rest go on.
# Each step's JSON and log go to OUT (default benchmarks/results/gpu_suite); benchmarks/suite_report.py
# then writes OUT/suite.json (device, versions, command, each step's outcome) and OUT/suite.md (the
# BENCHMARKS.md rows). --cpu-smoke runs every step on tiny shapes on the CPU in about a minute.
#
#     benchmarks/gpu_suite.sh                          # one GPU
#     benchmarks/gpu_suite.sh --cpu-smoke --out /tmp/smoke
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
COMMAND="benchmarks/gpu_suite.sh $*"
SMOKE=0
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-smoke) SMOKE=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        *) echo "gpu_suite.sh: unknown argument '$1' (expected --cpu-smoke, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    OUT=${OUT:-${TMPDIR:-/tmp}/gpu_suite_smoke}
    LLAMA=tiny-llama GEMMA=tiny-gemma DEVICE=cpu
    TABLE="64 128" GEMMA_TABLE="64 128" METHODS="64 128" WARM=24,32 GEMMA_WARM=48,64 LONG=(256 512)
    ROPES="default rerope:16 leaky_rerope:16,4 self_extend:4,16"
    LIMIT_TESTS=120 LIMIT_TABLE=120 LIMIT_GEMMA=120 LIMIT_METHODS=120 LIMIT_LONG=(120 120)
else
    OUT=${OUT:-benchmarks/results/gpu_suite}
    LLAMA=llama-3.2-1b GEMMA=gemma-3-1b DEVICE=cuda
    TABLE="4096 8192 16384 32768 65536 131072 262144" GEMMA_TABLE="16384 32768" METHODS="32768 131072"
    WARM=8192,16384 GEMMA_WARM=8192,16384 LONG=(524288 1048576)
    ROPES="default rerope:2048 leaky_rerope:2048,16 self_extend:8,2048"
    # Seconds per step, 475 in all. The tests compile FlexAttention kernels (several, each some seconds); a
    # 1M-token pass of the llama shape is about 7e16 FLOPs: 3 minutes at 40 % MFU, 2 at 60 %.
    LIMIT_TESTS=75 LIMIT_TABLE=75 LIMIT_GEMMA=45 LIMIT_METHODS=100 LIMIT_LONG=(50 130)
fi
mkdir -p "$OUT"
: >"$OUT/steps.tsv"
CHECKPOINTS=$(mktemp -d)
trap 'rm -rf "$CHECKPOINTS"' EXIT

step() {  # step NAME LIMIT COMMAND...: run COMMAND for at most LIMIT seconds, log it, record how it ended
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (at most ${limit} s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    printf '%s\t%s\t%s\t%s\n' "$name" "$?" "$((SECONDS - start))" "$*" >>"$OUT/steps.tsv"
}

models() {  # models NAME LIMIT SHAPE ARGS...: one benchmarks/gpu_models.py run, its JSON in OUT/NAME.json
    local name=$1 limit=$2 shape=$3
    shift 3
    step "$name" "$limit" "$PYTHON" benchmarks/gpu_models.py --shape "$shape" --device "$DEVICE" --repeats 1 \
        --checkpoint "$CHECKPOINTS/$shape" --out "$OUT/$name.json" "$@"
}

step cuda_tests "$LIMIT_TESTS" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/models
# shellcheck disable=SC2086  # the length lists split into arguments
models table_llama "$LIMIT_TABLE" "$LLAMA" --lengths $TABLE
# shellcheck disable=SC2086
models table_gemma "$LIMIT_GEMMA" "$GEMMA" --lengths $GEMMA_TABLE --warmup "$GEMMA_WARM"
# shellcheck disable=SC2086
models methods "$LIMIT_METHODS" "$LLAMA" --lengths $METHODS --warmup "$WARM" --ropes $ROPES
models long_1 "${LIMIT_LONG[0]}" "$LLAMA" --lengths "${LONG[0]}" --impls ropekit --warmup 4096
models long_2 "${LIMIT_LONG[1]}" "$LLAMA" --lengths "${LONG[1]}" --impls ropekit --warmup 4096
"$PYTHON" benchmarks/suite_report.py "$OUT" --command "$COMMAND"
