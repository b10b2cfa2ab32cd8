"""Engine vs oracle on ResNet-18 (1×28×28 inputs), all 21 layers + global, fixed and adaptive attack, one process.

Prints the wall-time ratios oracle/engine, the achieved GFLOP/s of the engine's forward work (counted with
torch's FLOP counter on a small slice of the same sweep and scaled by the number of images), this machine's
float32 matrix-multiply GFLOP/s, and whether accuracies agree. Defaults are the issue's budget (1,000 images,
A = 25), which takes hours on a 2-core machine: `--images` and `--A` shrink it; the printed header says which.

    python benchmarks/engine_vs_oracle.py [--images 1000] [--A 25] [--modes fixed adaptive] [--bfloat16]
        [--masks-per-pass auto]
"""
import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import fragility as fr
from fragility import models


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--A", type=int, default=25)
    parser.add_argument("--modes", nargs="+", default=["fixed", "adaptive"], choices=["fixed", "adaptive"])
    parser.add_argument("--bfloat16", action="store_true", help="also time the engine under bfloat16 autocast")
    parser.add_argument("--masks-per-pass", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="the engine's K, masks evaluated per pass (default auto)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = models.build("resnet18", 1, 10, seed=0).eval()
    x = torch.randn(args.images, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::2] = (y[::2] + 1) % 10
    options = dict(A=args.A, epsilon=0.05, batch_size=500, progress=False)
    engine = dict(options, masks_per_pass=args.masks_per_pass)
    print(f"ResNet-18, 1x28x28, {args.images} images, A = {args.A}, 21 layers + global, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, masks_per_pass {args.masks_per_pass}")
    peak = matmul_gflops()
    print(f"float32 matmul (2048^3): {peak:.1f} GFLOP/s")

    for attack in args.modes:
        fast, t_fast = timed(fr.sweep, model, x, y, attack=attack, **engine)
        plain, t_plain = timed(fr.sweep_naive, model, x, y, attack=attack, **options)
        same = np.array_equal(fast.accuracy.values, plain.accuracy.values)
        diff = float(abs(fast.accuracy - plain.accuracy).max())
        print(f"[{attack}] engine {t_fast:.1f} s (K = {fast.attrs['masks_per_pass']}), oracle {t_plain:.1f} s, "
              f"oracle/engine = {t_plain / t_fast:.2f}x, "
              f"accuracies identical: {same} (max |diff| {diff:.4f})")
        if attack == "fixed":
            n_small = 10
            with FlopCounterMode(display=False) as counter:
                fr.sweep(model, x[:n_small], y[:n_small], attack=attack, **engine)
            flops = counter.get_total_flops() * args.images / n_small
            print(f"[{attack}] engine forward work {flops / 1e12:.2f} TFLOP -> {flops / t_fast / 1e9:.1f} GFLOP/s "
                  f"= {flops / t_fast / 1e9 / peak:.0%} of the matmul rate")
        if args.bfloat16:
            low, t_low = timed(fr.sweep, model, x, y, attack=attack, precision="bfloat16", **engine)
            print(f"[{attack}] bfloat16 engine {t_low:.1f} s ({t_fast / t_low:.2f}x float32), "
                  f"max |accuracy diff| {float(abs(low.accuracy - fast.accuracy).max()):.4f}, "
                  f"mean {float(abs(low.accuracy - fast.accuracy).mean()):.4f}")


if __name__ == "__main__":
    main()
