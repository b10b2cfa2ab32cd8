"""Time `fragility run --profile quick` end to end from an empty results folder: training, sweeps, studies.

Run: python benchmarks/quick_profile.py [--profile quick] [--keep DIR]
The phases are run as `fragility train`, `fragility sweep`, then `fragility run` (which finds training and sweeps
done and runs the profile's studies): together exactly what one `fragility run` does. Each is a fresh subprocess,
so the times include start-up as a user would see it.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--keep", help="results folder to use (must be empty or absent) instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = args.keep or os.path.join(tmp, "results")
        times = {}
        for phase, command in (("train", "train"), ("sweep", "sweep"), ("studies", "run")):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fragility.cli", command, "--profile", args.profile,
                            "--results", results, "--quiet"], check=True)
            times[phase] = time.perf_counter() - start
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"fragility run --profile {args.profile} ({os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}):")
    for phase, seconds in times.items():
        print(f"  {phase:<7} {seconds:7.1f} s")
    print(f"  total   {sum(times.values()):7.1f} s")


if __name__ == "__main__":
    main()
