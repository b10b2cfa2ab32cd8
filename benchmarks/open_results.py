"""Time `fragility.open_results` on a store the size of the paper's grid, against reading every unit whole.

Run: python benchmarks/open_results.py [--seeds 3] [--epochs 10] [--A 25]
Writes a synthetic store (4 models with the layer counts of resnet18, resnet50, squeezenet1_1 and shufflenet_v2 ×
3 datasets × seeds × epochs, random accuracies) to a temporary folder, then times, in this one process:
  open     `open_results` (headers only),
  select   one model, dataset and layer over every seed, epoch, filter, α and input,
  load     every value (`.load()`),
  whole    the reference: every unit read whole with xarray and combined by `xarray.concat` (what an eager reader does).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from fragility import store

MODELS = {"resnet18": 21, "resnet50": 54, "squeezenet1_1": 26, "shufflenet_v2_x1_0": 57}  # filtered layers
DATASETS = ("mnist", "cifar10", "tiny-imagenet")


def write_store(folder: Path, seeds: int, epochs: int, A: int) -> int:
    """A synthetic store of the given size under `folder`; returns the number of units written."""
    rng = np.random.default_rng(0)
    count = 0
    for model, n_layers in MODELS.items():
        layers = [f"layer{i}" for i in range(n_layers)] + ["global"]
        shape = (len(layers), 3, A + 1)
        for dataset in DATASETS:
            for seed in range(seeds):
                for epoch in range(10, 10 * epochs + 1, 10):
                    sweep = xr.Dataset(
                        {"accuracy": (("layer", "filter", "alpha", "input"), rng.random(shape + (2,))),
                         "n_filtered": (("layer", "filter", "alpha"), rng.integers(0, 10**6, shape)),
                         "n_params": (("layer",), rng.integers(10**3, 10**6, len(layers))),
                         "threshold": (("layer", "filter", "alpha"), rng.random(shape)),
                         "base_accuracy": (("input",), rng.random(2)), "epsilon": ((), 0.1)},
                        coords={"layer": layers, "filter": ["h1", "h2", "h3"], "alpha": np.arange(A + 1) / A,
                                "input": ["clean", "adversarial"]}, attrs={"A": A})
                    unit = store.as_unit(sweep, model, dataset, seed, epoch, profile="benchmark")
                    store.write_unit(unit, store.unit_path(folder, model, dataset, seed, epoch))
                    count += 1
    return count


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="checkpoints 10, 20, … per seed")
    parser.add_argument("--A", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_units = write_store(folder, args.seeds, args.epochs, args.A)
        ds, t_open = timed(lambda: store.open_results(folder))
        _, t_select = timed(lambda: ds["accuracy"].sel(model="resnet50", dataset="cifar10", layer="layer7").values)
        loaded, t_load = timed(lambda: store.open_results(folder).load())
        whole, t_whole = timed(lambda: store.read_whole(folder))
        same = loaded.identical(whole)
    print(f"open_results on {n_units} units ({loaded.nbytes / 1e6:.0f} MB in memory), one process:")
    print(f"  open    {t_open:7.2f} s   ({t_whole / t_open:5.1f}× faster than reading whole)")
    print(f"  select  {t_select:7.2f} s   (one model, dataset and layer: {args.seeds * args.epochs} units)")
    print(f"  load    {t_load:7.2f} s   (open + every value)")
    print(f"  whole   {t_whole:7.2f} s   (every unit read whole by xarray and concatenated)")
    print(f"  loaded values identical to the whole read: {same}")


if __name__ == "__main__":
    main()
