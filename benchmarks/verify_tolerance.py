"""Measure how far a re-sweep of one stored checkpoint moves when its sums run in another order.

Run: python benchmarks/verify_tolerance.py [--results results/reference] [--profile reference] [--unit M/D/S/E]
     [--threads 2]
Re-sweeps a stored unit from its checkpoint or its shipped weights with another CPU thread count than the one that
computed it, and prints the largest absolute difference of each compared variable from the stored unit. To run the
kernels another CPU kind runs, limit the instruction set, e.g. as a CPU without AVX-512 (many AMD EPYC):
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/verify_tolerance.py --threads 1`
(measured on the reference's SqueezeNet 1.1 seed 1 epoch 2: accuracies moved by at most 0.003; at 2 threads instead
of 1, identical). `fragility.verification.TOLERANCE` — what `fragility
verify` allows a re-sweep on another machine kind — must lie above what this measures (the README states both).
"""
import argparse
import time

from fragility import profiles, store
from fragility.pipeline import stored_units, sweep_unit
from fragility.provenance import threads
from fragility.verification import COMPARED, TOLERANCE, _difference, _weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/reference")
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--unit", help="MODEL/DATASET/SEED/EPOCH (default: the first stored unit with weights)")
    parser.add_argument("--threads", type=int, default=2, help="the thread count of the re-sweep")
    args = parser.parse_args()
    profile = profiles.load_profile(args.profile)
    stored = stored_units(profile, profiles.results_dir(profile, args.results))
    if args.unit:
        model, dataset, seed, epoch = args.unit.split("/")
        unit = (model, dataset, int(seed), int(epoch))
    else:
        unit = next(u for u in profile.units() if u in stored and _weights(args.results, u) is not None)
    shipped = store.read_unit(store.unit_path(args.results, *unit))
    start = time.perf_counter()
    with threads(args.threads):
        again = sweep_unit(profile, args.results, unit, float(shipped["epsilon"]), progress=True)
    print(f"unit {'/'.join(map(str, unit))}: stored on {shipped.attrs.get('device')}; re-swept on "
          f"{again.attrs['device']} in {time.perf_counter() - start:.0f} s")
    for name in COMPARED:
        print(f"  {name:>15}: largest difference {_difference(again[name], shipped[name]):.4g}"
              + (f"  (allowed on another machine kind: {TOLERANCE[name]})" if name in TOLERANCE else ""))
    flips = int((again["correct"] != shipped["correct"]).sum()) if "correct" in shipped else None
    if flips is not None:
        print(f"  test images classified differently, over every cell: {flips} of {shipped['correct'].size}")


if __name__ == "__main__":
    main()
