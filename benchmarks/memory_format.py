"""The sweep's convolution layout per network: channels-last against contiguous, one process, one thread.

For each network (1×28×28 inputs, randomly initialised: the layout's speed does not depend on the weights' values),
sweeps the same layers (every filterable layer and `global` unless `--layers N` keeps the first N and the last)
under h1 with a fixed FGSM, alternating the two layouts `--repeats` times, and prints each layout's best time, the
ratio channels-last / contiguous (above 1: contiguous is faster) and whether the two agree on every example (they
round differently, so a rare example near the decision boundary may differ). A profile sets the faster layout per
model (`memory_format`); the reference sets ResNet-50's to contiguous from this benchmark.

    python benchmarks/memory_format.py [--models resnet18 resnet50 squeezenet1_1 shufflenet_v2_x1_0]
        [--images 200] [--A 4] [--layers 6] [--repeats 2] [--threads 1]
"""
import argparse
import time

import numpy as np
import torch

import fragility as fr
from fragility import models
from fragility.engine import filterable_layers

LAYOUTS = ("channels_last", "contiguous")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0"])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--A", type=int, default=4)
    parser.add_argument("--layers", type=int, default=6, help="the first N-1 filterable layers and the last (0: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.images} images 1x28x28, A = {args.A}, h1, fixed FGSM, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print("| network | layers | channels-last s | contiguous s | ratio (cl / contiguous) | same answers |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        model = models.build(name, 1, 10, seed=0).eval()
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(args.images, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (args.images,), generator=gen)
        every = filterable_layers(model, x[:1])
        layers = every if args.layers == 0 or args.layers >= len(every) else every[:args.layers - 1] + every[-1:]
        best, answers = {}, {}
        for _ in range(args.repeats):
            for layout in LAYOUTS:
                t = time.perf_counter()
                ds = fr.sweep(model, x, y, A=args.A, filters=["h1"], layers=layers, epsilon=0.1, progress=False,
                              batch_size=500, memory_format=layout)
                best[layout] = min(best.get(layout, float("inf")), time.perf_counter() - t)
                answers[layout] = ds["correct"].values
        same = float(np.mean(answers["channels_last"] == answers["contiguous"]))
        print(f"| {name} | {len(layers)} + global | {best['channels_last']:.1f} | {best['contiguous']:.1f} | "
              f"{best['channels_last'] / best['contiguous']:.2f} | {same:.4%} |", flush=True)


if __name__ == "__main__":
    main()
