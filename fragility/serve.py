"""`fragility serve`: the chapters as live pages on this machine — Voilà over the chapter notebooks (the widgets of
`fragility.widgets` with a kernel, no code cells), or JupyterLab (`lab=True`, the code too) — on a results folder,
the shipped reference by default.

How each chapter finds the results: `serve` writes a copy of every chapter notebook into a temporary folder it
owns (`fragility-serve-*` in the system's temporary folder), with the results folder (as an absolute path) and the
profile injected after the notebook's parameters cell, as papermill does; it serves that folder and deletes it
when it stops. The notebooks of notebooks/ are never touched; in JupyterLab, edits are saved in the copies, which
go with the folder.

Who can connect: the server binds to 127.0.0.1 unless told otherwise; bound to any other address it requires a
random token, which is part of the address printed. JupyterLab, which runs any code it is sent, always requires one.

Every argument is checked before anything starts (port in use, a results folder that does not exist or holds no
results, an unknown profile …: one FragilityError). Each page opened starts a kernel, shut down when the page is
closed (in Voilà; idle kernels of pages gone are culled after CULL_SECONDS). Ctrl-C (or SIGTERM) stops the server,
which shuts its kernels down; any process of it still alive after that is ended, and the temporary folder is
removed.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from . import book, checks, profiles
from .chapters import CHAPTERS
from .errors import FragilityError
from .files import atomic
from .store import open_results

PORT = 8866  # Voilà's own default
LOCAL = ("127.0.0.1", "::1")
PREFIX = "fragility-serve-"
READY_SECONDS = 240  # the server's start, on a busy machine
STOP_SECONDS = 30  # for the server to shut its kernels down after SIGTERM
CULL_SECONDS = 600  # a kernel whose page was closed is shut down after this long idle
NAMES = {False: "Voilà", True: "JupyterLab"}
BOOLEAN = checks.Rule(lambda v: isinstance(v, bool), "true or false")
QUIET = ("-W", "ignore::DeprecationWarning")  # the servers' own deprecations are not the reader's business
STOPPING = re.compile(r"received signal \d+, stopping")  # JupyterLab's line on SIGTERM: serve says it in its own


@dataclass(frozen=True)
class Plan:
    """What `serve` will run, every part checked: the results (absolute), the profile's name, where it listens,
    whether it is JupyterLab, its token (None: none required) and the chapter notebooks it copies."""

    results: Path
    shown: str
    profile: str
    ip: str
    port: int
    lab: bool
    token: str | None
    notebooks: tuple[Path, ...]

    def url(self, path: str = "") -> str:
        """The address of `path` on the server, with the token when one is required."""
        host = {"0.0.0.0": socket.gethostname(), "::": socket.gethostname()}.get(self.ip, self.ip)
        host = f"[{host}]" if ":" in host else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}/{path}{query}"

    def probe(self) -> str:
        """An address of the server on this machine, without the token."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.ip, self.ip)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"


def notebooks_folder() -> Path:
    """notebooks/ of the working folder, else of the repository."""
    return book.NOTEBOOKS if book.NOTEBOOKS.is_dir() else book.ROOT / book.NOTEBOOKS


def _bindable(ip: str, port: int) -> int:
    """The port (a free one when 0) after checking that a server can listen on ip:port; else one FragilityError."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: only a listener conflicts
        try:
            probe.bind((ip, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise FragilityError(f"--port {port} is in use on {ip}: choose another port, or 0 for a free one.") \
                    from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise FragilityError(f"--ip {ip} is not an address of this machine: use 127.0.0.1 (the default), "
                                     "or an address of one of its network interfaces.") from None
            if err.errno == errno.EACCES:
                raise FragilityError(f"--port {port} needs privileges on this machine: choose a port from 1024 to "
                                     "65535, or 0 for a free one.") from None
            raise FragilityError(f"cannot listen on {ip} port {port} ({err.strerror}): choose another --ip or "
                                 "--port.") from None
        return probe.getsockname()[1]


def plan(results=None, profile="reference", port: int = PORT, ip: str = "127.0.0.1", lab: bool = False,
         notebooks=None) -> Plan:
    """Check every argument of `serve` before anything starts.

    Args:
        results: a results folder written by `fragility run` (None: results/<profile>, from here or the repository).
        profile: a shipped profile name or a profile YAML file.
        port: a whole number 0..65535, free on `ip` (0: a free port is chosen).
        ip: an IP address of this machine; "localhost" is 127.0.0.1.
        lab: JupyterLab instead of Voilà.
        notebooks: the chapter notebooks' folder (None: notebooks/ here, else the repository's).

    Raises:
        FragilityError: naming the argument, what it got and what it accepts.
    """
    found = profiles.load_profile(profile)
    checks.require(lab, BOOLEAN, "lab")
    port = int(checks.require(port, checks.whole(0, 65535), "--port"))
    if not isinstance(ip, str):
        raise FragilityError(f"--ip must be an IP address of this machine, e.g. 127.0.0.1; got {ip!r}.")
    ip = "127.0.0.1" if ip == "localhost" else ip
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise FragilityError(f"--ip must be an IP address of this machine, e.g. 127.0.0.1 (the default) or 0.0.0.0 "
                             f"(every interface); got {ip!r}.") from None
    port = _bindable(ip, port)
    if results is not None and not isinstance(results, (str, Path)):
        raise FragilityError(f"--results must be a folder; got {results!r}.")
    folder = book.results_folder(results, found.name)
    shown = str(results) if results is not None else f"results/{found.name}"
    if folder.exists() and not folder.is_dir():
        raise FragilityError(f"--results {shown} is a file, not a folder: name a results folder written by "
                             "`fragility run`.")
    if not folder.is_dir():
        raise FragilityError(f"--results {shown} does not exist: name a results folder written by `fragility run` "
                             f"(default results/<profile>), or run `fragility run --profile {found.name}` first.")
    open_results(folder)  # holds responses, none of them damaged: else its own message
    source = Path(notebooks) if notebooks is not None else notebooks_folder()
    chapters = tuple(p for p in (source / f"{name}.ipynb" for name in CHAPTERS) if p.is_file())
    if not chapters:
        raise FragilityError(f"no chapter notebooks in {source}: run from the repository root.")
    token = secrets.token_urlsafe(24) if lab or ip not in LOCAL else None
    return Plan(folder.resolve(), shown, found.name, ip, port, lab, token, chapters)


def write_notebooks(chosen: Plan, folder: Path) -> list[Path]:
    """A copy of every chapter notebook in `folder`, the results and the profile injected after its parameters."""
    written = []
    for source in chosen.notebooks:
        notebook = parameterize_notebook(load_notebook_node(str(source)),
                                         {"results": str(chosen.results), "profile": chosen.profile})
        written.append(atomic(folder / source.name, lambda tmp, nb=notebook: nbformat.write(nb, tmp)))
    return written


def command(chosen: Plan, chapters: Path) -> list[str]:
    """The server's command line (its token, when any, travels in a file or the environment, not here)."""
    if chosen.lab:
        root = ["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        return [sys.executable, *QUIET, "-m", "jupyterlab", "--no-browser", f"--ServerApp.root_dir={chapters}",
                f"--ServerApp.ip={chosen.ip}", f"--ServerApp.port={chosen.port}", "--ServerApp.port_retries=0",
                "--ServerApp.log_level=WARN", "--LabApp.log_level=WARN", "--KernelManager.transport=ipc",
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *root]
    return [sys.executable, *QUIET, "-m", "voila", str(chapters), "--no-browser", f"--Voila.ip={chosen.ip}",
            f"--Voila.port={chosen.port}", "--Voila.port_retries=0", "--Voila.log_level=ERROR",
            "--KernelManager.transport=ipc", "--VoilaConfiguration.show_tracebacks=True"]


def voila_settings(token: str | None) -> dict:
    """Voilà's configuration beyond its command line: the token (None: none required); websocket pings as tornado
    accepts them; the XSRF check off, since Voilà's page sends no XSRF token with the request that shuts its
    kernel down when it is closed (its only other unsafe request, deleting a kernel, also needs the kernel's random
    id); a kernel whose page is gone all the same is shut down once idle for CULL_SECONDS."""
    settings = {"Voila": {"tornado_settings": {"ws_ping_interval": 30000, "ws_ping_timeout": 30000,
                                               "disable_check_xsrf": True}},
                "MappingKernelManager": {"cull_idle_timeout": CULL_SECONDS, "cull_interval": 60,
                                         "cull_connected": False}}
    if token:
        settings["Voila"]["token"] = token
    return settings


def _die_with_parent() -> None:  # runs in the child before it starts the server
    """Linux: the server gets SIGTERM should this process die without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """A running server: its process, the temporary folder it serves from and its address."""

    process: subprocess.Popen
    folder: Path
    url: str


def _relay(stream) -> None:
    """Copy the server's messages (and its kernels') to stderr as they come, but for its stopping line."""
    for line in iter(stream.readline, ""):
        if not STOPPING.search(line):
            sys.stderr.write(line)
            sys.stderr.flush()


def _ready(chosen: Plan, process: subprocess.Popen) -> None:
    """Wait until the server answers HTTP (any status); FragilityError if it stops or does not answer in time."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FragilityError(f"the {NAMES[chosen.lab]} server stopped before it answered (exit status "
                                 f"{process.returncode}); its messages are above.")
        try:
            with urllib.request.urlopen(chosen.probe(), timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise FragilityError(f"the {NAMES[chosen.lab]} server did not answer on {chosen.probe()} within "
                         f"{READY_SECONDS} s.")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server (it shuts its kernels down), then end whatever of it is still alive."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(family, timeout=10)


@contextlib.contextmanager
def running(chosen: Plan):
    """Start the server of `chosen` on copies of its notebooks and yield it once it answers; on leaving (Ctrl-C
    included) stop it, end its kernels and remove its folder."""
    root = Path(tempfile.mkdtemp(prefix=PREFIX))  # private (0700): the token file lives here
    process = None
    try:
        chapters = root / "chapters"
        write_notebooks(chosen, chapters)
        env = {k: v for k, v in os.environ.items() if k not in (book.VIEWS, "FRAGILITY_STATIC", "JUPYTER_TOKEN")}
        if chosen.lab and chosen.token:
            env["JUPYTER_TOKEN"] = chosen.token
        elif not chosen.lab:  # Voilà reads voila.json in its working folder
            settings = voila_settings(chosen.token)
            atomic(root / "voila.json", lambda tmp: Path(tmp).write_text(json.dumps(settings)))
        process = subprocess.Popen(command(chosen, chapters), cwd=root, env=env, stdin=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        relay = threading.Thread(target=_relay, args=(process.stderr,), daemon=True)
        relay.start()
        _ready(chosen, process)
        yield Server(process, root, chosen.url("lab" if chosen.lab else ""))
    finally:
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a second Ctrl-C waits
        try:
            if process is not None:
                _stop(process)
                relay.join(5)  # its last messages, once every process holding its stderr is gone
                if not relay.is_alive():
                    process.stderr.close()
            shutil.rmtree(root, ignore_errors=True)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)


def _say(line: str) -> None:
    print(line, flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(results=None, profile="reference", port: int = PORT, ip: str = "127.0.0.1", lab: bool = False,
          browser: bool = True, log=None) -> int:
    """Serve the chapters live until Ctrl-C (or SIGTERM); print the address, and one line when stopped.

    Args:
        results, profile, port, ip, lab: as `plan`, which checks them before anything starts.
        browser: open the address in the default web browser.
        log: called with each line (default: printed at once).

    Returns:
        0 when stopped by Ctrl-C or SIGTERM; 1 when the server stopped by itself (its messages precede).

    Raises:
        FragilityError: a bad argument (nothing started), or a server that did not start (nothing left behind).
    """
    checks.require(browser, BOOLEAN, "browser")
    chosen = plan(results, profile, port, ip, lab)
    log = log or _say
    kind = NAMES[lab]
    main = threading.current_thread() is threading.main_thread()
    if main:  # Ctrl-C and SIGTERM stop it, also where SIGINT was ignored (a shell's background job)
        previous = signal.signal(signal.SIGTERM, _interrupt), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        log(f"Starting {kind} on the {len(chosen.notebooks)} chapters of {chosen.shown} (profile "
            f"{chosen.profile}) …")
        with running(chosen) as server:
            note = f" (edits are saved in copies under {server.folder}, removed on stopping)" if lab else ""
            log(f"The chapters, live: {server.url}{note} — Ctrl-C stops the server.")
            if browser:
                webbrowser.open(server.url)
            status = server.process.wait()
        print(f"fragility serve: the {kind} server stopped by itself (exit status {status}); its messages are above.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        log(f"fragility serve: stopped; the {kind} server, its kernels and its temporary folder are gone.")
        return 0
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
