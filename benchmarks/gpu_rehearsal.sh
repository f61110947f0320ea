#!/usr/bin/env bash
# The rehearsal of every real task (tests/rehearsal: miniature trees in the official layouts,
# fabricated checkpoints, `clbench run --smoke` per task, provenance checked) on a GPU, then one
# short throughput measurement each for ResNet-50 feature extraction and the R50-C4 detector
# (benchmarks/gpu_throughput.py); prints one summary table. Budget: under 8 minutes (the
# rehearsal is cut at 330 s, the throughput at 120 s).
#
#   benchmarks/gpu_rehearsal.sh [--device cuda|cuda:N|cpu] [--dry] [--out DIR]
#
# --dry: on the CPU, two cheap rehearsal cases and the throughput script's tiny sizes; checks the
#        script end to end where no GPU is at hand (its numbers mean nothing).
# --out: keep the logs, tables and the rehearsal's results there (default: a fresh temporary folder).
# Exit status: 0 all passed; 1 a case or a measurement failed (see the logs named); 2 bad arguments
# or no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
dry=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) [ $# -ge 2 ] || { echo "gpu_rehearsal.sh: --device needs a value (cuda, cuda:N or cpu)" >&2; exit 2; }
              device="$2"; shift 2 ;;
    --dry) dry=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "gpu_rehearsal.sh: --out needs a folder" >&2; exit 2; }
           out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_rehearsal.sh: unknown argument '$1' (use --device, --dry, --out)" >&2; exit 2 ;;
  esac
done

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
rehearsal_args=()
throughput_args=()
if [ "$dry" = 1 ]; then
  device=cpu
  rehearsal_args=(--tasks imagefolder-linear,truthfulqa-mc1)
  throughput_args=(--dry)
fi
case "$device" in
  cuda*)
    if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
      echo "gpu_rehearsal.sh: --device $device, but torch sees no CUDA device (torch.cuda.is_available() is False);" \
           "run it on a machine with a GPU, or check the script here with --dry" >&2
      exit 2
    fi
    gpu=$(python -c 'import torch; print(torch.cuda.get_device_name())') ;;
  cpu) gpu="cpu" ;;
  *) echo "gpu_rehearsal.sh: --device must be cuda, cuda:N or cpu, got '$device'" >&2; exit 2 ;;
esac

out=${out:-$(mktemp -d -t clbench-gpu-rehearsal-XXXXXX)}
mkdir -p "$out"
start=$(date +%s)
status=0

t0=$(date +%s)
timeout 330 python -m tests.rehearsal.run --device "$device" --work "$out/work" "${rehearsal_args[@]}" \
  --out "$out/rehearsal.md" >"$out/rehearsal.log" 2>&1 || status=1
rehearsal_s=$(( $(date +%s) - t0 ))

t0=$(date +%s)
timeout 120 python benchmarks/gpu_throughput.py --device "$device" "${throughput_args[@]}" \
  --out "$out/throughput.md" >"$out/throughput.log" 2>&1 || status=1
throughput_s=$(( $(date +%s) - t0 ))

echo "## cl_bench GPU rehearsal: $(date -u '+%Y-%m-%d %H:%M UTC'), $gpu, torch $(python -c 'import torch; print(torch.__version__)')"
echo
echo "| task / measurement | method (checkpoint) / what | smoke metric / throughput | wall s | CPU s |"
echo "|---|---|---|---|---|"
if [ -s "$out/rehearsal.md" ]; then
  sed -n '3,$p' "$out/rehearsal.md" | grep -v '^| \*\*total' || true
fi
if [ -s "$out/throughput.md" ]; then
  cat "$out/throughput.md"
fi
echo "| **rehearsal** | $(grep -c '^ok ' "$out/rehearsal.log" || true) passed, $(grep -c '^FAILED' "$out/rehearsal.log" || true) failed | | $rehearsal_s | |"
echo "| **throughput** | | | $throughput_s | |"
echo "| **whole script** | | | **$(( $(date +%s) - start ))** | |"
if [ "$status" != 0 ]; then
  echo
  echo "FAILED (exit 1): see $out/rehearsal.log and $out/throughput.log" >&2
  grep -h '^FAILED\|Error\|error:' "$out/rehearsal.log" "$out/throughput.log" | tail -20 >&2 || true
fi
exit "$status"
