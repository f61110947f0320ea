"""ImageNet-1k through cl_bench: time per stage from per-image costs, for two machines.

    python benchmarks/imagenet_arithmetic.py --decode-ms 9.6 --write-gbs 0.5 \\
        [--gpu-img-s 3000] [--gpu-tflops 50] [--evals 2000]

Inputs measured on this machine (benchmarks/extraction.py, benchmarks/feature_memory.py): the CPU
time to decode + resize + crop one JPEG (``--decode-ms``) and the write rate of chunked cache
entries (``--write-gbs``). Inputs NOT measured here (no GPU was lent to this task): ResNet-50
forward images/s on the GPU (``--gpu-img-s``) and the GPU's sustained float32 GEMM rate
(``--gpu-tflops``); they are printed as assumptions. ``--evals`` is the number of objective
evaluations of the whole λ search (9 λ, warm-started; each evaluation is two GEMMs of
n_fit × 2048 × 1000).

Machines: one GPU with 16 CPU cores (``--workers auto`` = 15 decoding processes), and one 8-GPU
node with 112 cores, where one ``clbench run`` uses one GPU (``--device cuda:K``): either one
evaluation with 111 workers, or 8 evaluations at once (one per GPU, 13 workers each).
"""

from __future__ import annotations

import argparse

TRAIN, VAL, DIM, CLASSES = 1_281_167, 50_000, 2048, 1000


def hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode-ms", type=float, required=True, help="CPU ms per image (measured)")
    ap.add_argument("--write-gbs", type=float, required=True, help="chunked-entry write GB/s (measured)")
    ap.add_argument("--gpu-img-s", type=float, default=3000.0, help="ResNet-50 forward images/s (assumed)")
    ap.add_argument("--gpu-tflops", type=float, default=50.0, help="GPU float32 GEMM TFLOP/s (assumed)")
    ap.add_argument("--evals", type=int, default=2000, help="objective evaluations of the λ search (assumed)")
    ap.add_argument("--precision-speedup", type=float, default=2.0, help="fp16 / fp32 forward rate (assumed)")
    a = ap.parse_args()
    n = TRAIN + VAL
    feats_gb = n * DIM * 4 / 1e9
    write_s = feats_gb / a.write_gbs
    fit_rows = int(TRAIN * 0.8)
    eval_flop = 4 * fit_rows * DIM * CLASSES
    probe_s = a.evals * eval_flop / (a.gpu_tflops * 1e12)
    print(f"ImageNet-1k: {n:,} images; features {n:,} × {DIM} float32 = {feats_gb:.1f} GB "
          f"(fp16: {feats_gb / 2:.1f} GB).")
    print(f"measured here: decode {a.decode_ms:.1f} ms CPU/image/core, entry writes {a.write_gbs:.2f} GB/s; "
          f"assumed (no GPU lent): {a.gpu_img_s:,.0f} images/s fp32 forward, ×{a.precision_speedup:g} at fp16, "
          f"{a.gpu_tflops:g} TFLOP/s, {a.evals} evaluations.\n")
    print("| machine | workers | decode | forward (fp32 / fp16) | extraction ≈ max(decode, forward) + writes "
          "| probe (full batch on the GPU) |")
    print("|---|---|---|---|---|---|")
    for label, workers, runs in (("1 GPU, 16 cores", 15, 1), ("8-GPU node, 112 cores, 1 evaluation", 111, 1),
                                 ("8-GPU node, 8 evaluations at once", 13, 8)):
        decode = n * a.decode_ms / 1e3 / workers
        fwd32, fwd16 = n / a.gpu_img_s, n / (a.gpu_img_s * a.precision_speedup)
        ext32 = max(decode, fwd32) + write_s * runs  # runs share the disk; each chunk is fsync'ed in line
        ext16 = max(decode, fwd16) + write_s / 2 * runs  # fp16 entries are half the bytes
        print(f"| {label} | {workers} per run | {hms(decode)} | {hms(fwd32)} / {hms(fwd16)} | "
              f"{hms(ext32)} fp32, {hms(ext16)} fp16 per run | {hms(probe_s)} per run |")
    main_process = n * a.decode_ms / 1e3
    print(f"\n--workers 0 (decoding in the main process, the old path): {hms(main_process)} of decoding alone.")
    print(f"one evaluation of the probe's objective: {eval_flop / 1e12:.1f} TFLOP; "
          f"kNN (k=20) on the GPU: one {VAL:,} × {TRAIN:,} × {DIM} GEMM = {2 * VAL * TRAIN * DIM / 1e12:.0f} TFLOP "
          f"= {hms(2 * VAL * TRAIN * DIM / (a.gpu_tflops * 1e12))}.")


if __name__ == "__main__":
    main()
