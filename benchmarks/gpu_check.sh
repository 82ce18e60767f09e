#!/usr/bin/env bash
# Everything one GPU session must show of the fused CUDA kernel, in one call of under
# ten minutes: most important first, each part under its own time limit, so what ran
# comes back even when a later part runs long.
#
#   tests    the gpu-marked tests: the kernel on CUDA for every rule and dtype, CUDA
#            graphs, GradScaler, torch.compile, a tensor of more than 2**31 elements
#   sweep    the kernel's launch settings (BLOCK, NUM_WARPS) at 1.3B parameters, per dtype
#   bench    every shape, dtype, variant and implementation but torch.compile, the
#            kernel launched with the sweep's fastest settings (or its own, unswept)
#   host     the host's time per step of a small model, split into this package's Python
#            and Triton's launch (benchmarks/gpu_host.py)
#   compile  torch.compile beside the fused kernel and torch foreach, float32, at
#            124M parameters (the comparison the bench part leaves out)
#   compiled a compiled step of our optimizer (tensor lr, scheduler) against its eager
#            fused step at DQN size, with recompiles counted (benchmarks/compiled_step.py)
#   lowmem   the fused kernel with float32, bfloat16 (stochastic) and 8-bit state side by
#            side at 1.3B parameters, plain and centered+momentum (`--state-dtype`)
#
# Usage:  bash benchmarks/gpu_check.sh [PART ...]      (default: all seven, in that order)
# Each part writes PART.log (and bench, sweep, compile a PART.json of rows) to $OUT,
# or to ./gpu-check where OUT is unset, and summary.txt says how each part ended
# (124: stopped at its time limit). Runs from a checkout: rmsprop need not be installed
# (the timings are `python -m rmsprop bench --device cuda`, with src/ on PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX would take most of the GPU when its backend starts, in each test process too.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# rmsprop bench --device cuda, its tables as Markdown in the logs, each as its comparison ends.
bench=("$python" -m rmsprop bench --device cuda --steps 30 --warmup 3 --print-each --markdown)

launch=()  # the fastest settings of a sweep in $out, else the kernel's own
workers=()  # the tests compile dozens of kernel variants: in parallel where pytest-xdist is,
"$python" -c "import xdist" 2>/dev/null && workers=(-n 8)
# and one that hangs fails alone where pytest-timeout is, so the run still ends with its report
"$python" -c "import pytest_timeout" 2>/dev/null && workers+=(--timeout 100)

run_part() {  # run_part NAME SECONDS COMMAND...: one part, its log and its line in the summary
    local name=$1 seconds=$2 start=$SECONDS status
    shift 2
    echo "== $name (at most ${seconds} s): $*" | tee "$out/$name.log"
    timeout --kill-after=10 "$seconds" "$@" >>"$out/$name.log" 2>&1
    status=$?
    rm -f "$out"/*.partial  # a JSON save cut short (the device returns eight files at most)
    echo "$name: exit $status after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(tests sweep bench host compile compiled lowmem)
for part in "${parts[@]}"; do
    [[ $part =~ ^(tests|sweep|bench|host|compile|compiled|lowmem)$ ]] || {
        echo "unknown part '$part': choose from tests, sweep, bench, host, compile, compiled," \
            "lowmem" >&2
        exit 2
    }
done
: >"$out/summary.txt"
usable_sweep() {  # whether a sweep's rows name a fastest setting (one cut short may too)
    "$python" -c 'import json, sys; from rmsprop.benchmark import cuda
cuda.best_launch(json.load(open(sys.argv[1]))["rows"])' "$out/sweep.json" 2>/dev/null
}

for part in "${parts[@]}"; do
    [[ $part == sweep ]] && rm -f "$out/sweep.json"  # never an earlier run's (another card's)
    launch=()
    if [[ -s $out/sweep.json ]] && usable_sweep; then
        launch=(--launch-from "$out/sweep.json")
        echo "$part: launched with the fastest settings in $out/sweep.json" >>"$out/summary.txt"
    fi
    case $part in
        tests) JAX_PLATFORMS=cpu run_part tests 120 "$python" -m pytest tests -m gpu \
            -p no:cacheprovider -q -rfEs --durations=15 "${workers[@]}" ;;
        sweep) run_part sweep 80 "${bench[@]}" --sweep --shape gpt-1.3b --dtype float32 \
            --dtype bfloat16 --variant plain --variant centered+momentum --out "$out/sweep.json" ;;
        bench) run_part bench 150 "${bench[@]}" --size all "${launch[@]}" \
            --out "$out/bench.json" ;;
        host) run_part host 45 "$python" benchmarks/gpu_host.py --profile ;;
        compile) run_part compile 150 "${bench[@]}" "${launch[@]}" --dtype float32 \
            --shape gpt2-124m --implementation "rmsprop fused" --implementation "torch foreach" \
            --implementation torch.compile --out "$out/compile.json" ;;
        compiled) run_part compiled 60 "$python" benchmarks/compiled_step.py --device cuda ;;
        lowmem) run_part lowmem 120 "${bench[@]}" "${launch[@]}" --shape gpt-1.3b \
            --dtype float32 --variant plain --variant centered+momentum \
            --implementation "rmsprop fused" --state-dtype float32 \
            --state-dtype bfloat16-stochastic --state-dtype 8bit --out "$out/lowmem.json" ;;
    esac
done
cat "$out/summary.txt"
