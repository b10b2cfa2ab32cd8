"""The related studies run from a profile: stored per unit, resumable, combined by open_study (fragility.studies)."""
import numpy as np
import pytest

import fragility as fr
from fragility import FragilityError, pipeline, profiles, studies

from test_pipeline import TINY

STUDIES = {
    "selective": {"epoch": 1, "epochs": 1, "epsilons": 3},
    "neurons": {},
    "removal": {"p": [0.0, 0.5, 1.0], "draws": 2},
    "depth": {"depths": [1, 2], "epochs": 1, "A": 2, "epsilon": 0.3, "magnitudes": [0.0, 0.2]},
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    profile = profiles.parse_profile({**TINY, "seeds": [0], "studies": STUDIES})
    results = tmp_path_factory.mktemp("studies")
    pipeline.run(profile, results, progress=False)
    return profile, results


@pytest.mark.slow
def test_every_study_is_stored_and_combined(ran):
    profile, results = ran
    selective = fr.open_study(results, "selective")
    assert set(selective.training.values) == {"selective", "regular"}
    assert selective.accuracy.sel(model="smallcnn", dataset="digits", seed=0).sizes["epsilon"] == 3
    neurons = fr.open_study(results, "neurons")
    first = fr.models.build("smallcnn", 1, 10, depth=profile.depth).blocks[0].conv
    assert neurons.sizes["neuron"] == first.out_channels
    assert set(neurons.defense_accuracy.network.values) == {"original", "defended"}
    removal = fr.open_study(results, "removal")
    assert list(removal.p.values) == [0.0, 0.5, 1.0] and removal.sizes["draw"] == 2
    # p = 0 is the unperturbed network: the sweep's own unperturbed accuracy on the same test subset
    sweep = fr.open_results(results).sel(model="smallcnn", dataset="digits", seed=0, epoch=profile.epochs[-1])
    np.testing.assert_allclose(removal.accuracy.sel(p=0.0).squeeze().isel(draw=0).values,
                               np.broadcast_to(sweep.base_accuracy.values, (removal.sizes["layer"], 2)))
    depth = fr.open_study(results, "depth")
    assert sorted(depth.model.values) == ["smallcnn-d1", "smallcnn-d2"]


@pytest.mark.slow
def test_studies_resume_without_recomputing(ran):
    profile, results = ran
    files = sorted((results / "studies").rglob("*.nc"))
    before = {f: f.stat().st_mtime_ns for f in files}
    target = studies.study_path(results, "neurons", "smallcnn", "digits", 0)
    target.unlink()
    pipeline.run(profile, results, progress=False)
    assert target.is_file()
    assert all(f.stat().st_mtime_ns == t for f, t in before.items() if f != target)


@pytest.mark.slow
def test_a_corrupt_study_file_is_named(ran, tmp_path):
    _, results = ran
    bad = results / "studies" / "removal" / "smallcnn__digits__seed9.nc"
    bad.write_bytes(b"not netcdf")
    try:
        with pytest.raises(FragilityError, match="seed9.nc"):
            fr.open_study(results, "removal")
    finally:
        bad.unlink()


@pytest.mark.parametrize("raw, match", [
    ({"pruning": {}}, "unknown study 'pruning'"),
    ({"removal": {"fraction": 0.5}}, "unknown setting"),
    ([1, 2], "mapping"),
])
def test_bad_study_settings(raw, match):
    with pytest.raises(FragilityError, match=match):
        profiles.parse_profile({**TINY, "studies": raw})


def test_open_study_errors(tmp_path):
    with pytest.raises(FragilityError, match="unknown study"):
        fr.open_study(tmp_path, "nope")
    with pytest.raises(FragilityError, match="no stored removal study"):
        fr.open_study(tmp_path, "removal")
