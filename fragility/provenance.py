"""Where a result came from: library versions and the code's git commit."""
from __future__ import annotations

import contextlib
import functools
import subprocess
from importlib import metadata
from pathlib import Path

import torch


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout this package runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@functools.lru_cache(maxsize=1)
def processor() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor", or "unknown processor"."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else "unknown processor"


def device_description(device) -> str:
    """The hardware a result was computed on, e.g. "cpu: Intel(R) Xeon(R) … [AVX512], 2 threads" or "cuda: NVIDIA
    H100…": on a CPU its model name, the instruction set torch's kernels use (one model name can hide several), and
    the thread count — what decides the order of every floating-point sum."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{device.type}: {processor()} [{kernels}], {torch.get_num_threads()} threads"


@contextlib.contextmanager
def threads(count: int | None):
    """torch computes with `count` CPU threads while inside (None: as it is); the count before is restored on exit.
    The count is part of what a result depends on: sums split over other thread counts round differently."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def provenance() -> dict[str, str]:
    """Versions of fragility, torch and torchvision, and the git commit: attributes of every stored result."""
    return {
        "fragility_version": _version("fragility"),
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "git_commit": git_commit(),
    }
