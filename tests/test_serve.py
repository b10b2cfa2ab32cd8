"""`fragility serve`: bad arguments refused in one line before anything starts; the chapters live in a real browser
with a real kernel (Voilà); JupyterLab and any address but 127.0.0.1 behind a token; nothing left behind."""
import contextlib
import dataclasses
import functools
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import TINY_RUN
from fragility import cli, serve

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
STARTS = 300  # seconds for the server to start on a busy machine


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{serve.PREFIX}*")}


@pytest.fixture
def nothing_started():
    """No temporary folder of serve and no child process appear while the test runs."""
    folders, children = leftovers(), {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert leftovers() <= folders
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children


@pytest.fixture(scope="module")
def listening():
    """A port that something already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--port", "{busy}"], "--port {busy} is in use on 127.0.0.1: choose another port, or 0 for a free one."),
    (["--port", "70000"], "--port must be a whole number in 0..65535; got 70000."),
    (["--port", "eighty"], "--port must be a whole number in 0..65535; got 'eighty'."),
    (["--ip", "nowhere"], "--ip must be an IP address of this machine"),
    (["--ip", "192.0.2.1"], "--ip 192.0.2.1 is not an address of this machine"),
    (["--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["--results", "{tmp}/none", "--port", "0"], "--results {tmp}/none does not exist"),
    (["--results", "{tmp}", "--port", "0"], "no stored responses under {tmp}"),
    (["--results", "{tmp}/file", "--port", "0"], "--results {tmp}/file is a file, not a folder"),
])
def test_bad_arguments_are_one_line_before_anything_starts(args, message, listening, tmp_path, capsys,
                                                           nothing_started):
    (tmp_path / "file").write_text("not a folder")
    fill = {"busy": listening, "tmp": tmp_path}
    status = cli.main(["serve", "--no-browser", *(a.format(**fill) for a in args)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("fragility: error: " + message.format(**fill)) and err.count("\n") == 1, err


@pytest.mark.parametrize("bad, message", [
    (dict(lab="yes"), "lab must be true or false; got 'yes'."), (dict(port=-1), "--port must be a whole number"),
    (dict(port=1.5), "--port must be a whole number"), (dict(ip=None), "--ip must be an IP address"),
    (dict(results=3), "--results must be a folder; got 3."), (dict(browser="no"), "browser must be true or false"),
    (dict(profile=None), "profile must be a shipped profile name or a YAML file path")])
def test_serve_checks_its_arguments_in_python_too(bad, message, nothing_started):
    with pytest.raises(serve.FragilityError, match=re.escape(message)):
        serve.serve(**{"port": 0, "browser": False, **bad})


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert all(option in out for option in ("--results", "--profile", "--port", "--ip", "--lab", "--no-browser"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "fragility serve" in capsys.readouterr().out


def test_the_copies_take_the_results_after_their_parameters(tmp_path):
    chosen = serve.Plan(Path("/somewhere/results"), "results", "tiny", "127.0.0.1", 8866, False, None,
                        tuple(sorted((ROOT / "notebooks").glob("*.ipynb"))))
    written = serve.write_notebooks(chosen, tmp_path / "chapters")
    assert [p.name for p in written] == [p.name for p in chosen.notebooks]
    for original, copy in zip(chosen.notebooks, written):
        before, after = json.loads(original.read_text())["cells"], json.loads(copy.read_text())["cells"]
        at = next(i for i, c in enumerate(before) if "parameters" in c["metadata"].get("tags", []))
        assert len(after) == len(before) + 1 and after[at + 1]["metadata"]["tags"] == ["injected-parameters"]
        assert [c["source"] for c in after[:at + 1] + after[at + 2:]] == [c["source"] for c in before]
        code = "".join(after[at + 1]["source"])
        assert 'results = "/somewhere/results"' in code and 'profile = "tiny"' in code


def test_the_token_travels_in_a_file_not_on_the_command_line(tmp_path):
    chosen = serve.Plan(tmp_path, "results", "tiny", "127.0.0.2", 8866, False, "secret-token", ())
    assert not any("secret-token" in part for part in serve.command(chosen, tmp_path))
    assert serve.voila_settings("secret-token")["Voila"]["token"] == "secret-token"
    assert "token" not in serve.voila_settings(None)["Voila"]
    assert chosen.url() == "http://127.0.0.2:8866/?token=secret-token"
    lab = dataclasses.replace(chosen, lab=True)
    assert not any("secret-token" in part for part in serve.command(lab, tmp_path))


class Serving:
    """`python -m fragility.cli serve …` as a reader starts it; its output read as it comes."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", "fragility.cli", "serve", "--no-browser", *args],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")),
                                         daemon=True) for s, into in ((self.process.stdout, self.out),
                                                                      (self.process.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    def url(self) -> str:
        """The address it prints once the server answers."""
        deadline = time.monotonic() + STARTS
        while time.monotonic() < deadline:
            found = [m for line in self.out for m in re.findall(r"http://\S+", line)]
            if found:
                return found[0]
            assert self.process.poll() is None, "".join(self.out + self.err)
            time.sleep(0.2)
        raise AssertionError(f"no address within {STARTS} s: {''.join(self.out + self.err)}")

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, sig=signal.SIGINT) -> int:
        """Stop it as Ctrl-C (or `sig`) does; its exit status once its output is read."""
        self.process.send_signal(sig)
        status = self.process.wait(120)
        for reader in self.readers:
            reader.join(10)
        return status

    def close(self):
        """End it whatever happened (a failed test must not leave a server behind)."""
        if self.process.poll() is None:
            family = []
            with contextlib.suppress(psutil.Error):
                family = self.family()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                for p in [self.process, *family]:
                    with contextlib.suppress(ProcessLookupError, psutil.Error):
                        p.kill()
                self.process.wait()


@contextlib.contextmanager
def serving(*args: str):
    server = Serving(*args)
    try:
        yield server
    finally:
        server.close()


def command_of(process: psutil.Process) -> str:
    """Its command line, or "" once it has ended."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running after up to 30 s (zombies are ended)."""
    _, alive = psutil.wait_procs(processes, timeout=30)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


@pytest.fixture(scope="module")
def tiny(tiny_run, tmp_path_factory):
    """(the tiny run's results, its profile as a YAML file)."""
    _, results = tiny_run
    profile = tmp_path_factory.mktemp("profile") / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY_RUN))
    return results, profile


class Unredirected(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirection (to the login page) is the answer itself


def get(url: str, **headers) -> tuple[int, bytes]:
    """(status, body) of a GET, redirections not followed."""
    try:
        with urllib.request.build_opener(Unredirected).open(urllib.request.Request(url, headers=headers),
                                                            timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, f"{err.headers.get('Location', '')}".encode()


def refused(url: str) -> bool:
    """Forbidden, or sent to the login page."""
    status, body = get(url)
    return status in (401, 403) or (status == 302 and b"/login" in body)


def stopped_cleanly(server: Serving, family: list, port: int, kind: str, sig=signal.SIGINT) -> None:
    """Stopped by `sig`: one line, status 0, none of its processes left, its port free, its folder gone."""
    folders = {Path(f) for p in family for f in re.findall(rf"(/[^\s=]*{serve.PREFIX}[^/\s]+)", command_of(p))}
    lines = len(server.out)
    assert server.stop(sig) == 0, "".join(server.err)
    assert server.out[lines:] == [f"fragility serve: stopped; the {kind} server, its kernels and its temporary "
                                  "folder are gone.\n"]
    assert not running(family)
    assert free(port)
    assert folders and not any(f.exists() for f in folders)


PIXELS = """
const img = document.querySelector("img.fragility-figure");
const note = document.querySelector(".fragility-message");
if (!img || !img.complete || !img.naturalWidth || !note) { return null; }
const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext("2d"); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
for (let i = 0; i < d.length; i++) { h = (h * 31 + d[i]) % 1000000007; }
return {src: img.src, hash: h, width: c.width, message: note.textContent};
"""


def drawn(driver, than: dict | None = None) -> dict | None:
    """The figure's state (source, pixel hash, width, message) once drawn with no message, and different from
    `than` when given; else None."""
    state = driver.execute_script(PIXELS)
    if state and state["width"] and not state["message"] and (than is None or state["hash"] != than["hash"]):
        return state
    return None


def menu(driver, name: str):
    from selenium.webdriver.common.by import By  # the test extra's: the browser tests alone need it
    from selenium.webdriver.support.ui import Select

    return Select(driver.find_element(By.XPATH, "//div[contains(@class, 'fragility-live')]//div[contains(@class, "
                                                f"'widget-dropdown')][label[normalize-space()='{name}']]/select"))


def until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {seconds} s")


@pytest.mark.slow
def test_the_chapters_are_live_in_a_real_browser_with_a_real_kernel(tiny, browser, tmp_path):
    results, profile = tiny
    with serving("--results", str(results), "--profile", str(profile), "--port", "0") as server:
        url = server.url()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url  # no token on 127.0.0.1
        port = int(url.split(":")[2].strip("/"))
        driver = browser.webdriver(tmp_path / "chromium", "--window-size=1300,1800",
                                   "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        chrome = [psutil.Process(driver.service.process.pid)]
        chrome += chrome[0].children(recursive=True)
        family, kernels = [], []
        try:
            for chapter, control in (("fig04_baseline", "layer"), ("study_neurons", "input")):
                driver.get(f"{url}voila/render/{chapter}.ipynb")  # the page before is closed
                before = until(functools.partial(drawn, driver), STARTS, f"{chapter}: the figure")
                chosen = menu(driver, control)
                options = [o.text for o in chosen.options]
                assert len(options) > 1, options
                index = 1 if chosen.first_selected_option.text == options[0] else 0
                chosen.select_by_index(index)
                after = until(functools.partial(drawn, driver, before), 120,
                              f"{chapter}: the figure redrawn for {control} {options[index]}")
                assert after["src"] != before["src"] and after["width"] > 0
                assert menu(driver, control).first_selected_option.text == options[index]
                page = driver.find_element("tag name", "body").text
                assert "Traceback" not in page and "Error" not in page, page[-2000:]
                ARTIFACTS.mkdir(exist_ok=True)
                driver.save_screenshot(str(ARTIFACTS / f"serve-{chapter}.png"))
                now = server.family()
                family += [p for p in now if p not in family]
                kernels.append({p for p in now if "ipykernel" in command_of(p)})
                assert kernels[-1], f"{chapter}: no kernel"
            assert any("voila" in command_of(p) for p in family)
            assert not running(list(kernels[0] - kernels[1])), "the kernel of a closed page lives on"
        finally:
            driver.quit()
        assert not running(chrome), "the browser or its driver survived"
        stopped_cleanly(server, family, port, "Voilà")
        errors = "".join(server.err)
        assert "Traceback" not in errors and "Error" not in errors, errors  # no kernel reported an error


def notebook_hashes() -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.slow
def test_jupyterlab_requires_its_token_and_serves_copies_pointed_at_the_results(tiny, tmp_path):
    results, profile = tiny
    originals = notebook_hashes()
    with serving("--results", str(results), "--profile", str(profile), "--port", "0", "--lab") as server:
        url = server.url()
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/lab\?token=([\w-]{20,})", url)
        assert found, url
        port, token = int(found[1]), found[2]
        api = f"http://127.0.0.1:{port}/api/contents"
        assert get(api)[0] == 403
        assert get(api, Authorization="token wrong")[0] == 403
        status, body = get(api, Authorization=f"token {token}")
        assert status == 200
        assert sorted(item["name"] for item in json.loads(body)["content"]) == sorted(originals)
        status, body = get(f"{api}/fig04_baseline.ipynb", Authorization=f"token {token}")
        cells = json.loads(body)["content"]["cells"]
        injected = [c["source"] for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1
        assert f'results = "{Path(results).resolve()}"' in injected[0] and 'profile = "tiny"' in injected[0]
        stopped_cleanly(server, server.family(), port, "JupyterLab", signal.SIGTERM)
    assert notebook_hashes() == originals


@pytest.mark.slow
def test_bound_elsewhere_voila_requires_its_token(tiny):
    results, profile = tiny
    with serving("--results", str(results), "--profile", str(profile), "--port", "0", "--ip", "127.0.0.2") as server:
        url = server.url()
        found = re.fullmatch(r"http://127\.0\.0\.2:(\d+)/\?token=([\w-]{20,})", url)
        assert found, url
        port = int(found[1])
        for path in ("", "?token=wrong", "voila/render/fig04_baseline.ipynb", "voila/api/contents"):
            assert refused(f"http://127.0.0.2:{port}/{path}"), path
        assert get(url)[0] == 200
        stopped_cleanly(server, server.family(), port, "Voilà")
