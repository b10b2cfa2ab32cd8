"""The repository's shape: linted, one small module per concept, thin notebooks, a README that lists every module,
and nothing that points outside the repository."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in (ROOT / "fragility").rglob("*.py"))


def test_the_code_passes_the_linter():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is installed with the test extra: pip install -e '.[test]'"
    done = subprocess.run([ruff, "check", "--output-format", "concise", "fragility", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(module):
    assert len(module.read_text().splitlines()) <= 450


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_thin(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    parameters = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1, "one parameters cell"
    lines = [line for c in code if c not in parameters for line in "".join(c["source"]).splitlines() if line.strip()]
    assert len(lines) <= 15 and any("book.load(" in line for line in lines), lines
    assert all(c["outputs"] == [] for c in code), "notebooks are stored unexecuted"


def test_the_readme_layout_table_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    for module in MODULES:
        name = module.stem if module.stem != "__init__" else module.parent.name
        assert f"`{name}`" in readme, f"README's layout table lacks {name}"


def test_nothing_cites_a_document_outside_the_repository():
    texts = [*MODULES, *(ROOT / "book").glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb"), ROOT / "README.md",
             *(ROOT / "fragility" / "profiles").glob("*.yaml")]
    for path in texts:
        assert not re.search(r"\bSPEC\b", path.read_text()), path
