"""Paper-scale timing of the sweep engine: one unit of each shape of the paper's grid, then the whole grid's time.

Units (random weights from fragility.models.build, synthetic inputs, ε fixed at 0.05): ResNet-18 at MNIST's shape
(1×28×28, 10 classes), ResNet-18 at CIFAR-10's (3×32×32, 10 classes) and ResNet-50 at Tiny ImageNet's (3×64×64,
200 classes), 10,000 test images each (the paper's Tiny ImageNet test split, 20% of its training set, has 20,000: the
grid scales to it), every filterable layer + global, A = 25, fixed and adaptive attack, masks_per_pass="auto".
Per unit it prints the seconds; the engine's achieved TFLOP/s (FLOPs counted with FlopCounterMode on a slice of a
few images and scaled, backward ones included for the adaptive attack) against the matrix-multiply rate measured in
the same run at the same precision; one mask per pass (K = 1) against batched on a slice of --compare-images; with
--compare-precisions, the same unit under tf32 and bfloat16 against float32 (max and mean |Δ accuracy|).
Then the paper's grid on this device: 4 networks × 3 datasets × 3 seeds × 10 checkpoints of sweeps (the units above
scaled to each test set; SqueezeNet 1.1, ShuffleNet V2 ×1.0 and the ResNet not timed at a shape are estimated from
their forward FLOPs and layer counts at the timed ResNet's rate, or timed with --time-grid) and the 36 trainings
(Adam, batch 100, 100 epochs on 60,000 / 50,000 / 80,000 images, from a few timed steps).

    python benchmarks/paper_scale.py [--device cuda] [--precision float32|tf32|bfloat16] [--images 10000] [--A 25]
        [--modes fixed adaptive] [--datasets mnist cifar10 tiny-imagenet] [--masks-per-pass auto]
        [--compare-precisions] [--time-grid] [--quick]

--quick (tiny sizes: 16 images, A = 2, 3 layers per network, unit times scaled to all layers; minutes on a CPU)
checks the script; with --masks-per-pass 8 on a CPU it measures K = 1 against batched there
(fragility.passes.CPU_MASKS_PER_PASS).
"""
import argparse
import functools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import fragility as fr
from fragility import models
from fragility.engine import filterable_layers, tf32

# dataset: (channels, size, classes, test images, training images); the network timed at that shape
SHAPES = {"mnist": (1, 28, 10, 10_000, 60_000), "cifar10": (3, 32, 10, 10_000, 50_000),
          "tiny-imagenet": (3, 64, 200, 20_000, 80_000)}
TIMED = {"mnist": "resnet18", "cifar10": "resnet18", "tiny-imagenet": "resnet50"}
NETWORKS = ("resnet18", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0")
SEEDS, CHECKPOINTS, EPOCHS, TRAIN_BATCH = 3, 10, 100, 100


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def matmul_tflops(device: torch.device, precision: str, n: int) -> float:
    """The best matrix-multiply rate of n×n operands at `precision` (bfloat16 operands for bfloat16)."""
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    with tf32(precision == "tf32"):
        for _ in range(3):
            a @ b
        best = min(timed(lambda: a @ b, device)[1] for _ in range(10))
    return 2 * n**3 / best / 1e12


def network(name: str, dataset: str, n: int, device: torch.device):
    """A randomly initialised network for the dataset's shape, n synthetic inputs and labels it half gets right."""
    channels, size, classes = SHAPES[dataset][:3]
    model = models.build(name, channels, classes, seed=0).to(device).eval()
    x = torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = torch.cat([model(xb).argmax(1) for xb in x.split(500)])
    y[::2] = (y[::2] + 1) % classes
    return model, x, y


def chosen_layers(model, x, count: int | None) -> list[str]:
    """Every filterable layer, or `count` of them evenly spaced (first and last included)."""
    found = filterable_layers(model, x[:2])
    if count is None or count >= len(found):
        return found
    return [found[round(i)] for i in np.linspace(0, len(found) - 1, count)]


def sweep(model, x, y, args, attack: str, layers, precision=None, k=None):
    return fr.sweep(model, x, y, A=args.A, layers=layers, epsilon=0.05, attack=attack, batch_size=500,
                    device=args.device, precision=precision or args.precision, progress=False,
                    masks_per_pass=k or args.masks_per_pass)


def flops(fn) -> float:
    """FLOPs of fn's operations, backward ones included, counted by FlopCounterMode's dispatch mode alone: its module
    tracking hooks the backward in a way torch.func's gradients (the adaptive attack) refuse."""
    counter = FlopCounterMode(display=False)
    mode = getattr(torch.utils.flop_counter, "_FlopCounterMode", None)
    with mode(counter) if mode is not None else counter:
        fn()
    return counter.get_total_flops()


def time_unit(name: str, dataset: str, attack: str, args, peak: float) -> float:
    """Seconds of one unit at --images, printed with its FLOP rate, K = 1 against batched, precisions; returns the
    seconds scaled to every layer + global and to the dataset's test set."""
    model, x, y = network(name, dataset, args.images, args.device)
    layers = chosen_layers(model, x, args.layers)
    n_layers = len(filterable_layers(model, x[:2]))
    sweep(model, x[:500], y[:500], args, attack, layers[-1:])  # warm-up: kernels' first calls at the batch's shapes
    ds, seconds = timed(lambda: sweep(model, x, y, args, attack, layers), args.device)
    work = flops(lambda: sweep(model, x[:args.flop_images], y[:args.flop_images], args, attack, layers))
    work *= args.images / args.flop_images
    rate = work / seconds / 1e12
    c, s = SHAPES[dataset][:2]
    print(f"[{name} @ {dataset} {c}x{s}x{s}, {attack}] {len(layers)} of {n_layers} layers + global, "
          f"{args.images} images, A = {args.A}: {seconds:.1f} s (K = {ds.attrs['masks_per_pass']}), "
          f"{work / 1e12:.3g} TFLOP -> {rate:.3g} TFLOP/s = {rate / peak:.0%} of the matmul rate", flush=True)
    n = min(args.compare_images, args.images)
    one = timed(lambda: sweep(model, x[:n], y[:n], args, attack, layers, k=1), args.device)
    many = (ds, seconds) if n == args.images else timed(lambda: sweep(model, x[:n], y[:n], args, attack, layers),
                                                         args.device)
    same = np.array_equal(one[0].accuracy.values, many[0].accuracy.values)
    print(f"    {n} images: K = 1 {one[1]:.1f} s, K = {many[0].attrs['masks_per_pass']} {many[1]:.1f} s "
          f"({one[1] / many[1]:.2f}x), identical accuracies: {same}", flush=True)
    if args.compare_precisions:
        for other in ("tf32", "bfloat16"):
            low, t = timed(functools.partial(sweep, model, x, y, args, attack, layers, precision=other), args.device)
            diff = abs(low.accuracy - ds.accuracy)
            print(f"    {other}: {t:.1f} s ({seconds / t:.2f}x {args.precision}), |Δ accuracy| vs {args.precision}: "
                  f"max {float(diff.max()):.4f}, mean {float(diff.mean()):.5f}", flush=True)
    return seconds * (n_layers + 1) / (len(layers) + 1) * SHAPES[dataset][3] / args.images


@functools.cache
def forward_work(name: str, dataset: str, device) -> float:
    """Forward FLOPs per image × (half the filterable layers + 1): how a sweep's work grows with the network."""
    model, x, _ = network(name, dataset, 2, device)
    return flops(lambda: model(x)) / 2 * (len(filterable_layers(model, x)) / 2 + 1)


def train_step_seconds(name: str, dataset: str, args) -> float:
    """Seconds of one Adam step on a batch of 100 (forward, backward, update), timed over a few steps (--quick:
    batches of 10, scaled)."""
    channels, size, classes = SHAPES[dataset][:3]
    model = models.build(name, channels, classes, seed=0).to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(args.train_batch, channels, size, size, device=args.device)
    y = torch.randint(0, classes, (args.train_batch,), device=args.device)
    autocast = torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.precision == "bfloat16")

    def step():
        optimizer.zero_grad()
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    with tf32(args.precision == "tf32"):
        step()
        seconds = timed(lambda: [step() for _ in range(args.train_steps)], args.device)[1] / args.train_steps
    return seconds * TRAIN_BATCH / args.train_batch


def grid(args, timed_units: dict) -> None:
    """The paper's grid on this device: sweeps per attack and trainings, with how each number was obtained."""
    print(f"\npaper grid: {len(NETWORKS)} networks x {len(args.datasets)} datasets ({', '.join(args.datasets)}) x "
          f"{SEEDS} seeds x {CHECKPOINTS} checkpoints of sweeps (A = {args.A}), "
          f"{len(NETWORKS) * len(args.datasets) * SEEDS} trainings of {EPOCHS} epochs")
    sweeps = dict.fromkeys(args.modes, 0.0)
    training = 0.0
    for dataset in args.datasets:
        n_train = SHAPES[dataset][4]
        for name in NETWORKS:
            cells = []
            ratio = forward_work(name, dataset, args.device) / forward_work(TIMED[dataset], dataset, args.device)
            for attack in args.modes:
                if (name, dataset, attack) in timed_units:
                    unit, how = timed_units[name, dataset, attack], "timed"
                else:
                    unit = timed_units[TIMED[dataset], dataset, attack] * ratio
                    how = f"estimated: {ratio:.2f}x the work of {TIMED[dataset]}"
                sweeps[attack] += unit * SEEDS * CHECKPOINTS
                cells.append(f"{attack} {unit:.0f} s/unit ({how})")
            step = train_step_seconds(name, dataset, args)
            train = step * math.ceil(n_train / TRAIN_BATCH) * EPOCHS
            training += train * SEEDS
            print(f"  {dataset:<13} {name:<19} {', '.join(cells)}; training {train / 3600:.2f} h "
                  f"({step * 1e3:.1f} ms/step)", flush=True)
    for attack, seconds in sweeps.items():
        print(f"  {attack} attack: sweeps {seconds / 3600:.1f} h + trainings {training / 3600:.1f} h = "
              f"{(seconds + training) / 3600:.1f} h ({(seconds + training) / 86400:.2f} days) on this device")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "tf32", "bfloat16"])
    parser.add_argument("--images", type=int)
    parser.add_argument("--A", type=int)
    parser.add_argument("--modes", nargs="+", default=["fixed", "adaptive"], choices=["fixed", "adaptive"])
    parser.add_argument("--datasets", nargs="+", default=list(SHAPES), choices=list(SHAPES),
                        help="the shapes to time (the grid covers these)")
    parser.add_argument("--masks-per-pass", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="K of the batched runs (default auto; on a CPU auto is 1: pass e.g. 8 to measure)")
    parser.add_argument("--compare-precisions", action="store_true", help="also run each unit at tf32 and bfloat16")
    parser.add_argument("--time-grid", action="store_true", help="time every network of the grid, not only the units")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script (CPU: minutes)")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    quick = dict(images=16, A=2, layers=3, compare_images=16, flop_images=2, train_steps=1, train_batch=10, matmul=512)
    full = dict(images=10_000, A=25, layers=None, compare_images=1_000, flop_images=4, train_steps=10,
                train_batch=TRAIN_BATCH, matmul=8192 if args.device.type == "cuda" else 2048)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    device = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device {args.device} ({device}), torch {torch.__version__}, precision {args.precision}, {args.images} "
          f"images per unit, A = {args.A}, layers: {args.layers or 'all'} + global, batch 500, masks_per_pass "
          f"{args.masks_per_pass}"
          f"{' (--quick)' if args.quick else ''}")
    peak = matmul_tflops(args.device, args.precision, args.matmul)
    print(f"matmul ({args.matmul}^3, {args.precision}): {peak:.3g} TFLOP/s", flush=True)
    units = {}
    for dataset in args.datasets:
        for attack in args.modes:
            name = TIMED[dataset]
            units[name, dataset, attack] = time_unit(name, dataset, attack, args, peak)
    if args.time_grid:
        for dataset in args.datasets:
            for name in NETWORKS:
                for attack in args.modes:
                    if (name, dataset, attack) not in units:
                        units[name, dataset, attack] = time_unit(name, dataset, attack, args, peak)
    grid(args, units)


if __name__ == "__main__":
    main()
