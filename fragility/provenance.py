"""Where a result came from: library versions and the code's git commit."""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


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


@functools.lru_cache(maxsize=8)
def device_description(device) -> str:
    """The hardware a result was computed on, e.g. "cpu: Intel(R) Xeon(R) …, 2 threads" or "cuda: NVIDIA H100…"."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{device.type}: {names[0] if names else 'unknown processor'}, {torch.get_num_threads()} threads"


def provenance() -> dict[str, str]:
    """Versions of fragility, torch and torchvision, and the git commit: attributes of every stored result."""
    return {
        "fragility_version": _version("fragility"),
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "git_commit": git_commit(),
    }
