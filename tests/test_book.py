"""End to end: a tiny pipeline run, every chapter notebook executed with papermill, the book built and opened in
headless Chromium: offline equations, a control operated without a kernel, no machine paths."""
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import papermill as pm
import pytest

from fragility import book, verdicts
from fragility.chapters import CHAPTERS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
LAYERS = "blocks.0.conv, blocks.1.conv, fc, global"


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def site(tiny_run, tmp_path_factory):
    """(the built site, the book folder, the build log): the tiny run's notebooks executed and the book built in a
    copy of the repository's book sources, the results given as the relative path a reader types."""
    _, results = tiny_run
    tmp = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "book", tmp / "book", ignore=shutil.ignore_patterns("_executed"))
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    (tmp / "results").symlink_to(results)
    executed = run(sys.executable, "-m", "fragility.book", "execute", "--results", "results", "--profile", "tiny",
                   cwd=tmp)
    assert executed.returncode == 0, executed.stderr[-3000:]
    built = run(Path(sys.executable).parent / "jupyter-book", "build", ".", "--keep-going", cwd=tmp)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-execute.txt").write_text(executed.stdout)
    return tmp / "_build" / "html", tmp, built.stdout + built.stderr


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


def test_book_builds_without_warnings_broken_links_or_machine_paths(site, tiny_run):
    html, folder, log = site
    problems = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|SEVERE|CRITICAL)\b", line)]
    assert not problems, "\n".join(problems)
    for page in sorted(html.rglob("*.html")):
        links = parse(page)
        for target in links.images + links.links:
            if local(target):
                assert (page.parent / target.split("#")[0]).exists(), f"{page.relative_to(html)}: {target}"
        text = page.read_text()
        for path in {str(folder), str(tiny_run[1]), str(ROOT), "/tmp/", "/root/"}:
            assert path not in text, f"{page.relative_to(html)} shows the machine path {path}"
    for name, chapter in CHAPTERS.items():
        text = (html / "book" / "_executed" / f"{name}.html").read_text()
        assert "Traceback" not in text and "Not run" not in text, name
        assert ("The paper’s claim" in text or "The paper's claim" in text) and "What our run shows" in text, name
        if chapter.figure is not None:
            assert [src for src in parse(html / "book" / "_executed" / f"{name}.html").images if local(src)], name
    parameters = (html / "book" / "_executed" / "fig04_baseline.html").read_text()
    assert 'results = "results"' in re.sub(r"<[^>]+>", "", parameters).replace("&quot;", '"')


def test_the_claims_chapter_links_every_claim_to_its_evidence(site, tiny_run):
    html, _, _ = site
    page = html / "book" / "_executed" / "claims.html"
    text = page.read_text()
    links = [t for t in parse(page).links if t.endswith(".html") and not t.startswith(("http", "#"))]
    assert {"fig10_local.html", "fig12_selective.html", "study_removal.html"} <= {Path(t).name for t in links}
    # one row per claim and panel, each verdict styled by its class, after a count of the verdicts
    table = verdicts.claims(tiny_run[1], samples=20)
    counts = table["verdict"].value_counts()
    head = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in verdicts.VERDICTS)
    assert f"{len(table)} rows (claim × panel): {head}." in text
    for verdict in verdicts.VERDICTS:
        assert text.count(f"verdict-{verdict}") == int(counts.get(verdict, 0)), verdict
    for claim in table["id"].unique():
        assert f"<b>{claim}</b>" in text, claim
    intro = (html / "index.html").read_text() if (html / "index.html").exists() else ""
    first = re.search(r'href="([^"]*_executed/[^"]+)"', (html / "book" / "intro.html").read_text())
    assert first and "claims" in first.group(1), "the intro links the claims chapter first"
    assert intro is not None


def test_notebook_parameters_are_checked_before_any_kernel_starts(site, tmp_path):
    _, folder, _ = site
    cli = (sys.executable, "-m", "fragility.book", "execute", "--results", "results", "--profile", "tiny",
           "--output", tmp_path)
    for params, message in (
            (("-p", "model", "smallcnn", "-p", "layer", "conv9"),
             "unknown layer 'conv9' of smallcnn: choose from " + LAYERS + "."),
            (("-p", "model", "vgg"), "unknown model 'vgg' in these results: choose from resnet18, smallcnn."),
            (("-p", "seed", "true"), "parameter seed must be a whole number ≥ 0, or null; got True."),
            (("-p", "epoch", "ten"), "parameter epoch must be a whole number ≥ 1, or null; got 'ten'."),
            (("-p", "colour", "red"), "no notebook takes the parameter(s) colour")):
        out = run(*cli, *params, cwd=folder)
        assert out.returncode == 2 and out.stderr.startswith(f"python -m fragility.book: error: {message}"), \
            out.stderr
        assert out.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())  # refused before any notebook ran: nothing written


def test_a_failing_notebook_leaves_nothing_behind(site, tmp_path, monkeypatch):
    _, folder, _ = site
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    notebook = json.loads((folder / "notebooks" / "fig06_filters.ipynb").read_text())
    notebook["cells"].append({"cell_type": "code", "execution_count": None, "id": "fails", "metadata": {},
                              "outputs": [], "source": ["raise ValueError('broken on purpose')"]})
    (notebooks / "fig06_filters.ipynb").write_text(json.dumps(notebook))
    monkeypatch.chdir(folder)
    with pytest.raises(book.FragilityError, match="fig06_filters.ipynb: broken on purpose"):
        book.execute("results", "tiny", notebooks=notebooks, output=tmp_path / "out")
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".ipynb" or p.name.startswith(".")]


def test_papermill_runs_a_notebook_on_its_own_with_widgets(site, tmp_path):
    _, folder, _ = site
    out = pm.execute_notebook(folder / "notebooks" / "fig06_filters.ipynb", tmp_path / "fig06.ipynb",
                              kernel_name="python3", progress_bar=False, cwd=str(folder),
                              parameters=dict(results="results", profile="tiny", model="smallcnn", layer="fc"))
    kinds = [set(o.get("data", {})) for cell in out.cells if "page.figure()" in cell.source for o in cell.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds)
    assert any("image/png" in k for k in kinds)


def test_a_study_the_results_lack_is_reported_not_run(tmp_path):
    out = pm.execute_notebook(ROOT / "notebooks" / "study_depth.ipynb", tmp_path / "depth.ipynb",
                              kernel_name="python3", progress_bar=False,
                              parameters=dict(results=str(tmp_path), profile="tiny"))
    shown = [o["data"]["text/markdown"] for cell in out.cells for o in cell.get("outputs", []) if "data" in o
             and "text/markdown" in o["data"]]
    assert shown and all(text.startswith("**Not run.**") for text in shown)
    assert not any("image/png" in o.get("data", {}) for cell in out.cells for o in cell.get("outputs", []))


@pytest.fixture(scope="module")
def server(site):
    """The built site served on localhost."""
    html, _, _ = site
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def chromium(browser, url: str, tmp_path, *extra) -> str:
    """The DOM of `url` after its scripts ran, in headless Chromium with every host but localhost unreachable."""
    flags = browser.flags(tmp_path / "profile", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                          "--window-size=1400,2000", "--virtual-time-budget=15000", *extra)
    return run(browser.chromium, *flags, "--dump-dom", url, timeout=240).stdout


def test_equations_render_offline(browser, server, tmp_path):
    dom = chromium(browser, f"{server}/book/method.html", tmp_path)
    assert dom.count("<mjx-container") >= 10  # MathJax, bundled with the build, typeset the equations
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom, flags=re.S))
    assert "\\sum" not in text and "$$" not in text and "\\bar" not in text  # no raw TeX left


PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.querySelector(".fragility-views"), image = root.querySelector("img");
  const select = root.querySelector("select[name='layer']");
  const pixels = (img) => { const c = document.createElement("canvas"); c.width = img.naturalWidth;
    c.height = img.naturalHeight; const g = c.getContext("2d"); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
    for (let i = 0; i < d.length; i += 97) { h = (h * 31 + d[i]) % 1000000007; } return h; };
  const before = [image.getAttribute("src"), pixels(image)];
  image.addEventListener("load", () => {
    document.body.setAttribute("data-probe", JSON.stringify({before: before, after: [image.getAttribute("src"),
      pixels(image)], chosen: select.value, width: image.naturalWidth}));
  }, {once: true});
  select.value = String((Number(select.value) + 1) % select.options.length);
  select.dispatchEvent(new Event("change"));
});
</script>"""


def test_a_control_switches_the_figure_without_a_kernel(browser, site, server, tmp_path):
    html, _, _ = site
    page = html / "book" / "_executed" / "fig04_baseline.html"
    probe = page.with_name("fig04_baseline.probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(browser, f"{server}/book/_executed/{probe.name}", tmp_path)
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["before"][0] != result["after"][0]  # another view was chosen…
    assert result["before"][1] != result["after"][1] and result["width"] > 0  # …and a different figure drawn
    shot = tmp_path / "fig04.png"
    run(browser.chromium, *browser.flags(tmp_path / "shot", "--window-size=1400,2000", f"--screenshot={shot}"),
        f"{server}/book/_executed/fig04_baseline.html", timeout=240)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "fig04_baseline.png")


@pytest.mark.parametrize("workers", [0, 1.5, "two"])
def test_a_bad_worker_count_is_refused_before_anything_runs(tmp_path, workers):
    with pytest.raises(book.FragilityError, match="workers.*a whole number ≥ 1"):
        book.execute("results", "tiny", output=tmp_path / "out", workers=workers)
    assert not (tmp_path / "out").exists()
