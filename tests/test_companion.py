"""What readers of a companion expect: how to cite it (CITATION.cff, the book's BibTeX), its licence, the tested
environment pinned, launch buttons only where the repository has an address, and the results as one zip."""
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import fragility as fr
from fragility import archive, cli, launch, ownership
from test_report import PHI, below, results_folder, sweep

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DOI = "10.1016/j.artint.2023.104060"


@pytest.fixture(scope="module")
def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_names_the_software_and_prefers_the_paper(citation):
    assert str(citation["cff-version"]).startswith("1.2")
    assert citation["type"] == "software" and citation["title"].startswith("fragility")
    assert citation["authors"] and str(citation["version"]) == PROJECT["version"]
    assert citation["license"] == PROJECT["license"]
    paper = citation["preferred-citation"]
    assert paper["type"] == "article" and paper["doi"] == DOI
    assert paper["title"] == "Fragility, robustness and antifragility in deep learning"
    assert paper["journal"] == "Artificial Intelligence" and paper["year"] == 2024 and paper["volume"] == 327
    assert [a["family-names"] for a in paper["authors"]] == ["Pravin", "Martino", "Nicosia", "Ojha"]


LICENCES = {"MIT": ("MIT License", "Permission is hereby granted, free of charge, to any person obtaining a copy")}


def test_the_licence_file_is_the_licence_pyproject_names():
    assert PROJECT["license"] in LICENCES, f"add the text signature of {PROJECT['license']} here"
    title, phrase = LICENCES[PROJECT["license"]]
    text = (ROOT / "LICENSE").read_text()
    assert text.splitlines()[0].strip() == title and phrase in " ".join(text.split())


def bibtex(text: str) -> dict[str, dict[str, str]]:
    """{entry type: {field: value}} of the BibTeX entries in `text` (one level of braces inside a value)."""
    out = {}
    for kind, body in re.findall(r"@(\w+)\{[^,]+,(.*?)\n\}", text, re.S):
        out[kind] = {k.lower(): v.strip("{}") for k, v in re.findall(r"(\w+)\s*=\s*(\{(?:[^{}]|\{[^{}]*\})*\})", body)}
    return out


def test_the_book_gives_bibtex_for_the_paper_and_the_software(citation):
    entries = bibtex((ROOT / "book" / "intro.md").read_text())
    paper, software = entries["article"], entries["software"]
    assert paper["doi"] == DOI and paper["year"] == "2024" and paper["volume"] == "327"
    assert paper["title"] == citation["preferred-citation"]["title"] and paper["pages"] == "104060"
    assert paper["author"].split(" and ")[0] == "Pravin, Chandresh"
    assert software["version"] == PROJECT["version"] and software["title"] == citation["title"]
    assert software["license"] == PROJECT["license"]


def test_the_lock_file_pins_the_tested_environment():
    lines = [line.strip() for line in (ROOT / "requirements-lock.txt").read_text().splitlines()]
    pins = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9][\w.-]*==[\w.!+-]+", line), f"not an exact pin: {line}"
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    assert "fragility" not in pins  # the project itself is installed from the clone
    for spec in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]:
        wanted = Requirement(spec)
        name = canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is not pinned"
        assert wanted.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {spec}"


def test_the_readme_says_when_to_use_which_environment_file():
    readme = (ROOT / "README.md").read_text()
    for name in ("pyproject.toml", "requirements-lock.txt", "environment.yml", "fragility archive", "CITATION.cff",
                 "FRAGILITY_REPOSITORY_URL"):
        assert name in readme, name


# launch buttons

def theme(path: Path) -> dict:
    """The Sphinx theme options Jupyter Book 1 derives from the configuration file at `path`."""
    from jupyter_book.config import get_final_config  # the book's builder: imported by these tests alone

    config, _ = get_final_config(user_yaml=path, sourcedir=ROOT, cli_config={"latex_individualpages": False})
    return config["html_theme_options"]


def test_no_repository_address_means_no_launch_button(tmp_path):
    config = launch.book_config(ROOT / "_config.yml", environ={})
    assert config["repository"]["url"] == ""
    assert config["launch_buttons"]["binderhub_url"] == config["launch_buttons"]["colab_url"] == ""
    options = theme(launch.write(tmp_path / "_config.yml", ROOT / "_config.yml", environ={}))
    # not even Jupyter Book's own default address, which it would fill in for a missing one
    assert options["repository_url"] == "" and not options["launch_buttons"]["binderhub_url"]
    assert not options["launch_buttons"]["colab_url"] and not options["use_repository_button"]
    # the committed file itself names no address either
    assert theme(ROOT / "_config.yml")["repository_url"] == ""


def test_a_github_address_gives_binder_and_colab(tmp_path):
    environ = {launch.VARIABLE: "https://github.com/someone/fragility.git/", launch.BRANCH: "release"}
    out = launch.write(tmp_path / "book" / "_config.yml", ROOT / "_config.yml", environ=environ)
    options = theme(out)
    assert options["repository_url"] == "https://github.com/someone/fragility"
    assert options["repository_branch"] == "release"
    assert options["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    original = yaml.safe_load((ROOT / "_config.yml").read_text())
    written = yaml.safe_load(out.read_text())
    assert {k: v for k, v in written.items() if k not in ("repository", "launch_buttons")} == \
        {k: v for k, v in original.items() if k not in ("repository", "launch_buttons")}
    launch.write(out, ROOT / "_config.yml", environ={})  # its own file: replaced
    assert theme(out)["repository_url"] == ""


def test_colab_only_for_github():
    config = launch.book_config(ROOT / "_config.yml", {launch.VARIABLE: "https://gitlab.com/someone/fragility"})
    assert config["launch_buttons"] == {**config["launch_buttons"], "binderhub_url": "https://mybinder.org",
                                        "colab_url": ""}
    assert config["repository"]["branch"] == "main"


@pytest.mark.parametrize("url", ["http://github.com/a/b", "github.com/a/b", "https://github.com", "not an address",
                                 "https://github.com/a b/c", "https://github.com/a/b\"onclick"])
def test_a_bad_address_is_refused_naming_the_variable(url, tmp_path):
    with pytest.raises(fr.FragilityError, match=launch.VARIABLE):
        launch.write(tmp_path / "c.yml", ROOT / "_config.yml", environ={launch.VARIABLE: url})
    assert not (tmp_path / "c.yml").exists()


def test_launch_never_writes_over_the_source_or_a_users_file(tmp_path, capsys):
    source = tmp_path / "_config.yml"
    source.write_text((ROOT / "_config.yml").read_text())
    with pytest.raises(fr.FragilityError, match="source itself"):
        launch.write(source, source, environ={})
    mine = tmp_path / "mine.yml"
    mine.write_text("title: mine\n")
    with pytest.raises(fr.FragilityError, match="not written by fragility.launch"):
        launch.write(mine, source, environ={})
    assert mine.read_text() == "title: mine\n"
    assert launch.main(["--source", str(source), "--output", str(mine)]) == 2
    assert capsys.readouterr().err.startswith("python -m fragility.launch: error:")


def test_make_book_builds_with_the_generated_configuration():
    makefile = (ROOT / "Makefile").read_text()
    assert "-m fragility.launch --output _build/_config.yml" in makefile
    assert re.search(r"jupyter-book build \. .*--config _build/_config\.yml", makefile)


# the results as one zip

def fill(folder: Path) -> list[str]:
    """A results folder with one unit and every kind of file beside it; the files an archive must hold."""
    results_folder(folder, {("m", "d", 0, 1): sweep({"a": (below(0.1), PHI)}, n=50)})
    kept = ["README.md", "epsilon/m__d.json", "profile.json", "responses/m/d/seed0/epoch001.nc",
            "studies/removal/m__d__seed0.nc", "weights/m/d/seed0/epoch001.pt"]
    for name in kept[:3] + kept[4:]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode() * 3)
    left = ["checkpoints/m/d/seed0/epoch001.pt", "studies/selective/runs/m__d__seed0/epoch002.pt", "notes.txt",
            "responses/m/d/seed0/.epoch002.nc.fragility-abcd1234.tmp", "studies/depth/x.pt", "epsilon/.hidden"]
    for name in left:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"never archived")
    outside = folder.parent / f"{folder.name}-outside.txt"
    outside.write_text("outside")
    (folder / "weights" / "link.pt").symlink_to(outside)
    return kept


def test_the_archive_holds_the_results_and_never_checkpoints(tmp_path):
    folder = tmp_path / "reference"
    kept = fill(folder)
    assert archive.members(folder) == kept
    out = archive.archive(folder, tmp_path / "out" / "reference.zip", progress=False)
    with zipfile.ZipFile(out) as found:
        names = found.namelist()
        assert names == [f"reference/{name}" for name in kept] + ["reference/SHA256SUMS"]
        for name in kept:
            assert found.read(f"reference/{name}") == (folder / name).read_bytes()
        sums = dict(line.split("  ")[::-1] for line in found.read("reference/SHA256SUMS").decode().splitlines())
        assert sums == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in kept}
        assert found.comment.startswith(archive.COMMENT)
    assert sorted(p.name for p in out.parent.iterdir()) == ["reference.zip"]  # no temporary file left
    first = out.read_bytes()
    os.utime(folder / "README.md", (1e9, 1e9))
    assert archive.archive(folder, out, progress=False).read_bytes() == first  # its own archive: replaced, the same


def test_an_unpacked_archive_gives_the_same_report(tmp_path):
    folder = tmp_path / "results"
    fill(folder)
    out = archive.archive(folder, tmp_path / "r.zip", progress=False)
    with zipfile.ZipFile(out) as found:
        found.extractall(tmp_path / "unpacked")
    before, after = fr.report(folder, samples=20), fr.report(tmp_path / "unpacked" / "results", samples=20)
    np.testing.assert_array_equal(before[["value", "low", "high"]].to_numpy(), after[["value", "low", "high"]])


def test_the_archive_refuses_what_it_must_not_write(tmp_path):
    folder = tmp_path / "results"
    fill(folder)
    mine = tmp_path / "mine.zip"
    mine.write_bytes(b"my own file")
    cases = {"must name a .zip file": tmp_path / "r.tar", "lies inside the results folder": folder / "r.zip",
             "is not an archive fragility wrote": mine}
    for words, out in cases.items():
        with pytest.raises(fr.FragilityError, match=re.escape(words)):
            archive.archive(folder, out, progress=False)
    assert mine.read_bytes() == b"my own file" and not (folder / "r.zip").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(fr.FragilityError, match="no response units"):
        archive.archive(tmp_path / "empty", tmp_path / "e.zip")
    with pytest.raises(fr.FragilityError, match="does not exist"):
        archive.archive(tmp_path / "nope", tmp_path / "e.zip")
    (folder / ownership.LOCK).write_text(json.dumps(ownership._me()))  # a live run writes the folder
    with pytest.raises(fr.FragilityError, match="being written"):
        archive.archive(folder, tmp_path / "r.zip")
    assert not any(p.suffix == ".zip" for p in tmp_path.iterdir() if p != mine)


def test_archive_on_the_command_line(tmp_path, capsys):
    folder = tmp_path / "results"
    fill(folder)
    assert cli.main(["archive", "--results", str(folder), "--out", str(tmp_path / "r.zip"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.zip") and zipfile.is_zipfile(tmp_path / "r.zip")
    assert cli.main(["archive", "--results", str(folder), "--out", str(tmp_path / "r.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fragility: error: out must name a .zip file") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_archive_of_a_real_run_leaves_its_checkpoints_out(small, tmp_path):
    _, results = small
    assert any((results / "checkpoints").rglob("*.pt"))
    out = archive.archive(results, tmp_path / "small.zip", progress=False)
    with zipfile.ZipFile(out) as found:
        names = found.namelist()
    assert not any("checkpoints" in n or n.endswith(".pt") for n in names)
    units = sorted(str(p.relative_to(results)) for p in (results / "responses").rglob("*.nc"))
    assert [n.split("/", 1)[1] for n in names if "/responses/" in n] == units and len(units) == 2
    assert any(n.endswith("/profile.json") for n in names) and any("/epsilon/" in n for n in names)
