"""End to end: a tiny pipeline run and its studies, every figure and study notebook executed with papermill, the book
built and opened."""
import html
import json
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
from PIL import Image

from fragility import data, depth, pipeline, profiles, removal, selective, store, training
from test_plots import neurons_unit, save_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = [p.stem for pattern in ("fig*.ipynb", "study_*.ipynb") for p in sorted((ROOT / "notebooks").glob(pattern))]
PROFILE = dict(name="tiny", description="the smallest run that draws every figure", models=["smallcnn"],
               datasets=["digits"], seeds=[0, 1], epochs=[1, 2], every=1, n_test=100, A=4,
               filters=["h1", "h2", "h3"], attack="fixed", epsilon="auto", ratio=0.5, batch_size=200,
               train_batch_size=50, lr=0.003)
LAYERS = "blocks.0.conv, blocks.1.conv, fc, global"


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=ROOT, **kwargs)


def add_studies(results, work):
    """The four studies of the tiny run (smallcnn on digits, every seed), stored where `fragility run` stores them,
    for those it did not write: nodal dropout, random removal and depth (smallcnn-d1 trained here beside the run's
    smallcnn-d2) at the last epoch, selective backpropagation from the first epoch for two more."""
    missing = [s for s in ("selective", "neurons", "removal", "depth") if not (results / "studies" / s).is_dir()]
    if not missing:
        return
    test, train = data.load("digits", "test"), data.load("digits", "train")
    x, y = data.test_subset(test, PROFILE["n_test"])
    first, last = PROFILE["epochs"][0], PROFILE["epochs"][-1]
    for seed in PROFILE["seeds"]:
        unit = store.read_unit(store.unit_path(results, "smallcnn", "digits", seed, last))
        epsilon = float(unit["epsilon"])
        net = training.load_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", seed, last))[0]
        units = {}
        if "neurons" in missing:
            units["neurons"] = {"smallcnn": neurons_unit(net, x, y, epsilon)}
        if "removal" in missing:
            units["removal"] = {"smallcnn": removal.random_removal(net, x, y, p=[0, 0.25, 0.5, 0.75, 1], draws=3,
                                                                   seed=seed, epsilon=epsilon, progress=False)}
        if "depth" in missing:
            config = training.TrainConfig(model="smallcnn", dataset="digits", seed=seed, epochs=last, every=last,
                                          batch_size=PROFILE["train_batch_size"], lr=PROFILE["lr"], depth=1)
            shallow = training.load_checkpoint(training.train(config, train, test, work / "d1", progress=False)[-1])[0]
            magnitudes = [0, epsilon / 2, epsilon, 2 * epsilon]
            units["depth"] = {
                "smallcnn-d1": depth.depth_profile(shallow, x, y, magnitudes=magnitudes, seed=seed, A=PROFILE["A"],
                                                   epsilon=epsilon, progress=False),
                "smallcnn-d2": depth.depth_profile(net, x, y, magnitudes=magnitudes, seed=seed, sweep_ds=unit,
                                                   progress=False)}
        if "selective" in missing:
            start = training.checkpoint_path(results, "smallcnn", "digits", seed, first)
            units["selective"] = {"smallcnn": selective.selective_backprop(
                start, train, test, work / "selective" / f"seed{seed}", 2, x=x, y=y,
                sweep_ds=store.read_unit(store.unit_path(results, "smallcnn", "digits", seed, first)), epsilons=5,
                progress=False)}
        for study, stored in units.items():
            for model, ds in stored.items():
                save_study(results, study, ds, model, "digits", seed, profile="tiny")


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """(build folder, results folder, build log): the tiny profile run, the notebooks executed, the book built."""
    tmp = tmp_path_factory.mktemp("book")
    results = tmp / "results"
    pipeline.run(profiles.parse_profile(PROFILE), results=results, device="cpu", progress=False)
    add_studies(results, tmp / "work")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "book", tmp / "book", ignore=shutil.ignore_patterns("_executed"))
    start = time.perf_counter()
    executed = run(sys.executable, "-m", "fragility.book", "execute", "--results", results, "--profile", "tiny",
                   "--output", tmp / "book" / "_executed")
    assert executed.returncode == 0, executed.stderr[-3000:]
    middle = time.perf_counter()
    built = run(Path(sys.executable).parent / "jupyter-book", "build", tmp, "--keep-going")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    timing = f"execute {middle - start:.0f} s, build {time.perf_counter() - middle:.0f} s\n"
    (ARTIFACTS / "book-timing.txt").write_text(timing + executed.stdout)
    return tmp / "_build" / "html", results, built.stdout + built.stderr


class Links(HTMLParser):
    """The img sources and local link targets of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def local(target: str) -> bool:
    return not re.match(r"^([a-z]+:|#|//)", target)


def test_book_builds_without_warnings_or_broken_links(book):
    site, _, log = book
    problems = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|SEVERE|CRITICAL)\b", line)]
    assert not problems, "\n".join(problems)
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        links = parse(page)
        for target in links.images + links.links:
            if local(target):
                assert (page.parent / target.split("#")[0]).exists(), f"{page.relative_to(site)}: {target}"
    for name in NOTEBOOKS:
        page = site / "book" / "_executed" / f"{name}.html"
        text = page.read_text()
        assert [src for src in parse(page).images if local(src)], f"{name}: no figure"
        assert "The paper’s claim" in text or "The paper's claim" in text
        assert "What our run shows" in text and "Traceback" not in text, name
    for name in ("intro", "method", "reproducibility", "scale", "api"):
        assert (site / "book" / f"{name}.html").exists()


def test_notebook_parameters_are_checked_with_one_clear_message(book, tmp_path):
    _, results, _ = book
    cli = (sys.executable, "-m", "fragility.book", "execute", "--results", results, "--profile", "tiny",
           "--output", tmp_path)
    for params, message in (
            (("-p", "layer", "conv9"), f"unknown layer 'conv9' of smallcnn: choose from {LAYERS}."),
            (("-p", "model", "resnet18"), "unknown model 'resnet18' in these results: choose from smallcnn."),
            (("-p", "epoch", "7"), "unknown epoch 7 stored for smallcnn on digits: choose from 1, 2.")):
        out = run(*cli, *params)
        assert out.returncode == 2 and out.stderr == f"python -m fragility.book: error: {message}\n"
    assert not list(tmp_path.iterdir())  # checked before any notebook ran
    notebook = ROOT / "notebooks" / "fig06_filters.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:  # papermill on its own stops with the same line
        pm.execute_notebook(notebook, tmp_path / "bad.ipynb", kernel_name="python3", progress_bar=False,
                            parameters=dict(results=str(results), layer="conv9"))
    assert (err.value.ename, err.value.evalue) == ("FragilityError",
                                                   f"unknown layer 'conv9' of smallcnn: choose from {LAYERS}.")


def test_papermill_runs_a_notebook_on_its_own_with_widgets(book, tmp_path):
    """Run directly (no FRAGILITY_STATIC), the figure cell shows its controls and still stores the figure."""
    _, results, _ = book
    out = pm.execute_notebook(ROOT / "notebooks" / "fig06_filters.ipynb", tmp_path / "fig06.ipynb",
                              kernel_name="python3", progress_bar=False,
                              parameters=dict(results=str(results), model="smallcnn", layer="fc"))
    kinds = [set(o.get("data", {})) for cell in out.cells if "interactive_figure" in cell.source
             for o in cell.outputs]
    assert "application/vnd.jupyter.widget-view+json" in kinds[0] and "image/png" in kinds[1]


def test_a_study_the_results_lack_is_reported_not_run(tmp_path):
    """A results folder without the study: the chapter says so instead of failing the book."""
    out = pm.execute_notebook(ROOT / "notebooks" / "study_depth.ipynb", tmp_path / "depth.ipynb", kernel_name="python3",
                              progress_bar=False, parameters=dict(results=str(tmp_path), profile="tiny"))
    shown = [o["data"]["text/markdown"] for cell in out.cells for o in cell.get("outputs", []) if "data" in o
             and "text/markdown" in o["data"]]
    assert len(shown) == 2 and all(text.startswith("**Not run.** The results in ") for text in shown)
    assert not any("image/png" in o.get("data", {}) for cell in out.cells for o in cell.get("outputs", []))


PROBE = """<script>window.addEventListener("load", () => {document.body.setAttribute("data-images",
JSON.stringify(Array.from(document.images, i => [i.getAttribute("src"), i.complete, i.naturalWidth])));});</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium")
def test_figure_page_renders_in_chromium(book, tmp_path):
    site, _, _ = book
    page = site / "book" / "_executed" / "fig06_filters.html"
    probe = page.with_name("fig06_filters.probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--virtual-time-budget=10000"]
    dom = run(CHROMIUM, *flags, "--dump-dom", probe.as_uri(), timeout=180).stdout
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, dom[-2000:]
    figures = [i for i in json.loads(html.unescape(found.group(1))) if "_images/" in i[0]]
    assert figures and all(complete and width > 0 for _, complete, width in figures), figures
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "fig06_filters.png"
    shot.unlink(missing_ok=True)
    run(CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri(), timeout=180)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200) and (pixels < 200).mean() > 0.02  # drawn, not blank
