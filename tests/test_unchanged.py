"""Behaviour kept: sweeps, random-removal units, profile hashes and initial weights computed by this code equal those
computed by the code at the commit before attacks and stresses became plug-ins (run from that commit's own files)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import earlier_code

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "5fa244b6e5d8388195327e8c42d40aad6e7af5a9"  # the last commit with the former engine, attacks and filters

SCRIPT = '''
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
import fragility as fr
from fragility import models, profiles
from fragility.studies.removal import random_removal

out = {}
for name, size, layers in [("smallcnn", 16, None), ("resnet18", 32, ["conv1", "layer2.0.downsample.0", "fc"])]:
    model = models.build(name, 1, 10, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.randn(10, 1, size, size, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10
    for attack in ("fixed", "adaptive"):
        ds = fr.sweep(model, x, y, A=2, layers=layers, epsilon=0.05, attack=attack, batch_size=4, progress=False)
        out.update({f"{name}/{attack}/{v}": ds[v].values for v in ds.data_vars})
    found = random_removal(model, x, y, layers=layers, p=[0.0, 0.3, 0.5, 1.0], draws=2, seed=3, epsilon=0.05,
                           batch_size=4, progress=False)
    out.update({f"{name}/removal/{v}": found[v].values for v in found.data_vars})
    found = random_removal(model, x, y, layers=layers, p=[0.2, 0.9], draws=1, seed=3, batch_size=4, progress=False)
    out.update({f"{name}/removal-clean/{v}": found[v].values for v in found.data_vars})
    out[f"{name}/adversarial"] = fr.fgsm(model, x, y, 0.05).numpy()
    try:
        out[f"{name}/epsilon"] = np.array(fr.search_epsilon(model, x, y, tol=0.15))
    except fr.FragilityError as err:
        out[f"{name}/epsilon"] = np.array(str(err))
for name in models.NAMES:
    for key, value in models.build(name, 1, 10, seed=3).state_dict().items():
        out[f"weights/{name}/{key}"] = value.numpy()
hashes = {n: [profiles.load_profile(n).sweep_settings, profiles.load_profile(n).sweep_hash] for n in profiles.shipped()}
out["profiles"] = np.array(json.dumps(hashes, sort_keys=True, default=str))
np.savez(sys.argv[1], **out)
'''


def computed(tmp_path: Path, source: Path, name: str) -> dict:
    """The script's arrays, computed by the package at `source`."""
    script, out = tmp_path / "compute.py", tmp_path / f"{name}.npz"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, check=True,
                   env={**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"})
    with np.load(out) as found:
        return {k: found[k] for k in found.files}


@pytest.mark.slow
def test_results_equal_those_of_the_code_before(tmp_path):
    earlier = earlier_code(tmp_path, BEFORE)
    old, new = computed(tmp_path, earlier, "before"), computed(tmp_path, ROOT, "now")
    assert set(old) == set(new)
    differ = [k for k in old if k != "profiles" and not np.array_equal(old[k], new[k])]
    assert not differ, differ
    # a profile's hashes are the code's to keep where its file is the same (an edited profile may change them)
    before, now = json.loads(str(old["profiles"])), json.loads(str(new["profiles"]))
    kept = [name for name in before if subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--quiet", BEFORE, "--", f"fragility/profiles/{name}.yaml"]).returncode == 0]
    assert "quick" in kept and {name: before[name] for name in kept} == {name: now[name] for name in kept}
    assert any(k.endswith("/removal/accuracy") for k in old) and len(old) > 100
