"""Shared fixtures: a small network trained on the real handwritten digits, a tiny pipeline run, the smallest run
with every kind of file, and headless Chromium with its driver for the browser tests."""
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fragility import data, engine, models


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits, shaped like MNIST."""
    return (*data.load("digits", "train").tensors(), *data.load("digits", "test").tensors())


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A 2-block small CNN trained for a few epochs on digits (well above chance), in eval mode."""
    x, y = digits[0], digits[1]
    gen = torch.Generator().manual_seed(0)
    model = models.build("smallcnn", 1, 10, seed=0, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture
def one_thread():
    """Small networks run fastest on one thread, and busy shared CPUs make multi-threaded runs crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_set(digits):
    """60 test digits (x, y)."""
    return digits[2][:60], digits[3][:60]


def untimed(ds):
    """`ds` without the attributes that time its computation, which differ from run to run."""
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items()
                                                   if k not in ("seconds", "train_seconds")})


TINY_RUN = {
    "name": "tiny", "description": "the smallest run that draws every figure and study",
    "models": {"smallcnn": None, "resnet18": {"seeds": [0], "epochs": [1, 2]}}, "datasets": ["digits"],
    "seeds": [0, 1], "epochs": [1, 2], "every": 1, "n_test": 100, "A": 4, "filters": ["h1", "h2", "h3"],
    "attack": "fixed", "epsilon": "auto", "ratio": 0.5, "batch_size": 200, "train_batch_size": 50, "lr": 0.003,
    "studies": {"selective": {"epoch": 2, "epochs": 2, "every": 1, "levels": 4}, "batchnorm": {"n_train": 200},
                "neurons": {}, "removal": {"p": [0.0, 0.5, 0.7, 1.0], "draws": 2},
                "depth": {"depths": [1, 2], "epochs": 6, "A": 2, "local": False, "magnitudes": [0.0, 0.2, 0.5]},
                "conventions": {}},
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(profile, results folder) of a tiny profile run once per session: smallcnn (2 seeds) and ResNet-18 on
    digits, two checkpoints each, and every study."""
    from fragility import pipeline, profiles

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile = profiles.parse_profile(TINY_RUN)
        results = tmp_path_factory.mktemp("tiny-run")
        pipeline.run(profile, results, progress=False)
    finally:
        torch.set_num_threads(threads)
    return profile, results


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")  # Debian: chromium, chromium-driver
# the network is closed here: without the background-networking flags Chromium floods refused connections
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@dataclass(frozen=True)
class Browser:
    """Headless Chromium (`chromium`) and its WebDriver (`driver`)."""

    chromium: Path
    driver: Path

    def flags(self, profile: Path, *extra: str) -> list[str]:
        """Chromium's flags with a fresh user-data folder `profile` (created here; it must not exist yet)."""
        Path(profile).mkdir(parents=True)
        return [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra]

    def webdriver(self, profile: Path, *extra: str):
        """A Selenium WebDriver on this Chromium, through this chromedriver (no download); quit it when done."""
        from selenium import webdriver  # the test extra's: imported by the browser tests alone

        options = webdriver.ChromeOptions()
        options.binary_location = str(self.chromium)
        for flag in self.flags(profile, *extra):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(self.driver)))


def in_ci() -> bool:
    """True under CI=true (any value but empty, 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _install_browser() -> str:
    """Install Debian's chromium and chromium-driver with apt-get when this is root with apt-get; what happened. The
    test workers (pytest -n) take turns: one installs while the others wait on a lock, then find them installed."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "cannot install them here (installing needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(Path(tempfile.gettempdir()) / "fragility-tests-browser.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p.exists() for p in (CHROMIUM, CHROMEDRIVER)):
            return "another test worker installed them"
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
            done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=1200)
            if done.returncode:
                return f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return "apt-get installed chromium and chromium-driver"


@pytest.fixture(scope="session")
def browser() -> Browser:
    """Headless Chromium and chromedriver (Debian's packages), installed with apt-get when missing and possible.
    Missing all the same, the test is skipped here but fails under CI=true, with one message saying why."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    tried = _install_browser() if missing else ""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    problems = [f"{' and '.join(missing)} missing ({tried}): apt-get install -y chromium chromium-driver"] \
        if missing else []
    try:
        import selenium  # noqa: F401 (the test extra's: needed by the browser tests alone)
    except ImportError:
        problems.append("the Python package selenium is missing: pip install -e '.[test]'")
    if problems:
        message = "no headless Chromium for the browser tests: " + "; ".join(problems)
        if in_ci():
            pytest.fail(f"{message} (CI=true: browser tests may not be skipped)", pytrace=False)
        pytest.skip(message)
    return Browser(CHROMIUM, CHROMEDRIVER)

SMALL = {"name": "small", "description": "the smallest run with every kind of file", "models": ["smallcnn"],
         "datasets": ["digits"], "seeds": [0], "epochs": [1, 2], "every": 1, "n_test": 100, "A": 2,
         "filters": ["h1"], "attack": "fixed", "epsilon": "auto", "ratio": 0.5, "batch_size": 500,
         "train_batch_size": 50, "lr": 0.003, "depth": 2, "threads": 1}


def profile_file(folder, **changes) -> str:
    """The path of SMALL with `changes` as a profile file in `folder`."""
    path = folder / "small.yaml"
    path.write_text(json.dumps({**SMALL, **changes}))  # JSON is YAML
    return str(path)


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """(profile, results folder) of SMALL run once per session (a few seconds): checkpoints, an ε record, response
    units and the owner record."""
    from fragility import pipeline, profiles

    profile = profiles.parse_profile(SMALL)
    results = tmp_path_factory.mktemp("small") / "results"
    pipeline.run(profile, results, progress=False)
    return profile, results


def earlier_code(tmp_path, commit: str) -> Path:
    """The package `fragility` as it was at `commit`, extracted under tmp_path/before (put it first on PYTHONPATH to
    run it); the test is skipped when this checkout lacks that history."""
    root = Path(__file__).resolve().parents[1]
    have = subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if have.returncode != 0:
        pytest.skip("this checkout lacks the git history of the earlier code")
    earlier = tmp_path / "before"
    earlier.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", commit, "fragility"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(earlier)], input=archive, check=True)
    return earlier


EVALUATE = engine.evaluate  # the engine's own, which stopping_after wraps (never a wrapper of a wrapper)


class Stop(Exception):
    """Stands for a run stopped part-way (Ctrl-C, a killed process)."""


def stopping_after(monkeypatch, n: int) -> list:
    """Make the engine's unit evaluation raise Stop once it has finished n units; the units it evaluated are listed
    (a sweep stopped part-way, for the tests of resuming within a sweep)."""
    calls = []

    def counted(plan, graph, unit, *args, **kwargs):
        if len(calls) == n:
            raise Stop
        calls.append(unit)
        return EVALUATE(plan, graph, unit, *args, **kwargs)
    monkeypatch.setattr(engine, "evaluate", counted)
    return calls
