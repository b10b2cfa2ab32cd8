"""The book for one's own network, end to end: a small network and data set defined in a package written here (outside
fragility), a profile naming them by import path, `fragility run` and `fragility status` on it, then `make book
PROFILE=mine.yaml` in a copy of the book's sources — and the rendered report chapter names the network's layers,
the paper's claims are untestable on it, and every chapter renders."""
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's scripts: fragility, jupyter-book (make book runs them)
LAYERS = ["embed_conv", "bottleneck", "readout"]  # Net's Conv1d and Linear modules, in the order forward runs them

MODELS = '''"""A network of one's own: a Conv1d embedding, a Linear bottleneck and a Linear readout."""
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4, channels=2, classes=3):
        super().__init__()
        self.embed_conv = nn.Conv1d(channels, width, 3, padding=1)
        self.bottleneck = nn.Linear(width, width)
        self.readout = nn.Linear(width, classes)

    def forward(self, x):
        return self.readout(self.bottleneck(self.embed_conv(x).relu().mean(-1)).relu())


def build(width=4):
    return Net(width)
'''

DATA = '''"""A data set of one's own: noisy waves whose frequency is the class."""
import math

import torch
from torch.utils.data import TensorDataset


def load(n_train=120, n_test=60, classes=3, length=16):
    g = torch.Generator().manual_seed(0)
    n = n_train + n_test
    y = torch.arange(n) % classes
    t = torch.arange(length) / length
    x = 0.3 * torch.randn(n, 2, length, generator=g)
    x[:, 0] += torch.sin(2 * math.pi * (y[:, None] + 1) * t + torch.rand(n, 1, generator=g) * 2 * math.pi)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])
'''

PROFILE = """name: mine
description: a network of one's own on noisy waves
models:
  mynet: {factory: "mynets.models:build", kwargs: {width: 4}}
datasets:
  waves: {factory: "mynets.data:load", classes: 3}
layers: {types: [Conv1d, Linear]}
seeds: [0]
epochs: [2, 3]
every: 1
n_test: 60
A: 4
filters: [h1, h2, h3]
attack: fgsm
epsilon: 0.1
ratio: 0.5
batch_size: 60
train_batch_size: 10
lr: 0.03
threads: 1
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def text(page: Path) -> str:
    """A page's text, tags and scripts left out."""
    found = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page.read_text(), flags=re.S)
    return unescape(re.sub(r"<[^>]+>", " ", found))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the folder, the built site): the package and profile written, run and status, then `make book`."""
    folder = tmp_path_factory.mktemp("own-book")
    (folder / "mynets").mkdir()
    (folder / "mynets" / "__init__.py").write_text("")
    (folder / "mynets" / "models.py").write_text(MODELS)
    (folder / "mynets" / "data.py").write_text(DATA)
    (folder / "mine.yaml").write_text(PROFILE)
    for name in ("Makefile", "_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "book", folder / "book", ignore=shutil.ignore_patterns("_executed"))
    shutil.copytree(ROOT / "notebooks", folder / "notebooks")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGILITY_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(folder)]), OMP_NUM_THREADS="1")
    for command in (["run", "--quiet"], ["status"]):
        done = run(sys.executable, "-m", "fragility.cli", *command, "--profile", "mine.yaml", "--results",
                   "results/mine", cwd=folder, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "2 units: 2 trained, 2 swept" in done.stdout
    missing = [p.name for p in (BIN / "fragility", BIN / "jupyter-book") if not p.exists()]
    assert not missing, f"make book runs {', '.join(missing)} from {BIN}: pip install -e '.[test]' there"
    venv = BIN.parent  # make's own .venv is this environment: nothing is installed (-o: its stamp counts as made)
    made = run("make", "book", "PROFILE=mine.yaml", f"VENV={venv}", "-o", venv / ".installed", cwd=folder, env=env)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    log = made.stdout + made.stderr
    problems = [line for line in log.splitlines() if re.search(r"\b(WARNING|SEVERE|CRITICAL)\b", line)
                and "Kernel is running over TCP" not in line]
    assert not problems, "\n".join(problems)
    return folder, folder / "_build" / "html"


def test_make_book_reads_the_results_of_the_profile_file_under_its_name(built):
    folder, _ = built
    assert sorted(p.name for p in (folder / "results").iterdir()) == ["mine"]  # RESULTS: results/<file name>
    assert sorted(p.name for p in (folder / "book" / "_executed").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_the_report_chapter_names_the_networks_layers(built):
    folder, site = built
    page = site / "book" / "_executed" / "report.html"
    body = page.read_text()
    table = re.search(r"<table class='fragility-report'>.*?<tbody>(.*?)</table>", body, flags=re.S).group(1)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    rows = [re.sub(r"<[^>]+>", "", row[1]) for row in cells]  # the layer column
    assert rows == [*LAYERS, "global (the whole network)"]
    shown = text(page)
    assert "mynet on waves" in shown
    for name in LAYERS:  # the lists tools take name them, and the figure was drawn for the network
        assert f"'{name}'" in shown
    assert "<img src='../../views/report/000.png'" in body and (site / "views/report/000.png").stat().st_size > 0
    for name in ("report.csv", "report.md"):
        assert f"href='../../report/{name}'" in body and (site / "report" / name).is_file()
    written = pd.read_csv(site / "report" / "report.csv")
    assert list(dict.fromkeys(written["layer"])) == [*LAYERS, "global"] and set(written["model"]) == {"mynet"}
    assert str(folder) not in body and "/tmp/" not in body  # no machine path: the results as the reader typed them


def test_the_papers_claims_are_untestable_on_ones_own_network(built):
    _, site = built
    page = (site / "book" / "_executed" / "claims.html").read_text()
    rows = int(re.search(r"(\d+) rows \(claim × panel\): 0 holds, 0 differs, 0 inconclusive, (\d+) untestable",
                         page).group(1))
    assert rows > 0 and page.count("verdict-untestable") == rows


def test_every_chapter_renders_what_applies_and_says_what_is_missing(built):
    _, site = built
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "book" / "_executed" / f"{notebook.stem}.html"
        shown = text(page)
        assert "Traceback" not in shown, notebook.stem
        if notebook.stem.startswith("study_") or notebook.stem in ("fig11_batchnorm", "fig12_selective"):
            assert "Not run." in shown, notebook.stem  # the profile runs no study: each says what it lacks
    # figures of the paper's selections fall back to the network's own and say so
    assert "layer embed_conv (the paper: conv1)" in text(site / "book" / "_executed" / "fig04_baseline.html")
