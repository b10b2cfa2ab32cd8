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


def provenance() -> dict[str, str]:
    """Versions of fragility, torch and torchvision, and the git commit: attributes of every stored result."""
    return {
        "fragility_version": _version("fragility"),
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "git_commit": git_commit(),
    }
