"""A sweep stopped part-way resumes after its last finished unit, with the results of an uninterrupted sweep; a file
of another sweep is replaced, a file fragility did not write is never touched."""
import copy
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import Stop, stopping_after, untimed
from fragility import FragilityError, cli, engine, partial, pipeline, store
from fragility import sweep as fr_sweep
from fragility.plan import prepare

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = dict(A=4, filters=("h1", "h3"), epsilon=0.1, progress=False)


def unstopped(monkeypatch) -> list:
    return stopping_after(monkeypatch, 10 ** 6)


def same(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(untimed(a).drop_attrs(), untimed(b).drop_attrs())
    assert {k: v for k, v in a.attrs.items() if k != "provenance"} == \
        {k: v for k, v in b.attrs.items() if k != "provenance"}


@pytest.fixture(scope="module")
def reference(trained_cnn, test_set):
    return fr_sweep(trained_cnn, *test_set, **SETTINGS)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_stopped_sweep_resumes_after_its_finished_units_with_identical_results(trained_cnn, test_set, reference,
                                                                                 tmp_path, monkeypatch, n):
    file = tmp_path / "sweep.partial.npz"
    stopping_after(monkeypatch, n)
    with pytest.raises(Stop):
        fr_sweep(trained_cnn, *test_set, partial=file, **SETTINGS)
    assert file.exists() == (n > 0)
    calls = unstopped(monkeypatch)
    ds = fr_sweep(trained_cnn, *test_set, partial=file, **SETTINGS)
    units = list(reference["layer"].values)
    assert calls == units[n:], "the finished units were evaluated again"
    same(ds, reference)
    partial.discard(file)
    assert not file.exists()


def test_a_file_of_another_sweep_is_replaced_with_a_warning(trained_cnn, test_set, reference, tmp_path, monkeypatch):
    file = tmp_path / "sweep.partial.npz"
    stopping_after(monkeypatch, 2)
    with pytest.raises(Stop):
        fr_sweep(trained_cnn, *test_set, partial=file, **{**SETTINGS, "epsilon": 0.2})  # another ε: another sweep
    calls = unstopped(monkeypatch)
    with pytest.warns(UserWarning, match="another sweep"):
        ds = fr_sweep(trained_cnn, *test_set, partial=file, **SETTINGS)
    assert calls == list(reference["layer"].values), "units of another sweep were taken for this one's"
    same(ds, reference)


def test_the_key_changes_with_the_weights_inputs_and_settings(trained_cnn, test_set):
    x, y = test_set

    def key(model=trained_cnn, x=x, **changes):
        return partial.key(prepare(model, x, y, **{**SETTINGS, **changes}))

    first = key()
    assert key() == first, "the same sweep must find its own file"
    other = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        next(other.parameters())[0].mul_(1.0001)
    moved = x.clone()
    moved[0, 0, 0, 0] += 0.5
    for changed in (key(model=other), key(x=moved), key(A=5), key(epsilon=0.2), key(filters=("h1",)),
                    key(batchnorm="batch"), key(attack="adaptive"), key(metric="top2")):
        assert changed != first
    assert partial.key(prepare(trained_cnn, x, y, **SETTINGS), "contiguous") != first  # the layouts round differently


@pytest.mark.parametrize("content", [b"my own notes", b"PK\x03\x04 not a zip"])
def test_a_file_fragility_did_not_write_is_refused_before_anything_is_computed(trained_cnn, test_set, tmp_path,
                                                                               monkeypatch, content):
    file = tmp_path / "mine.npz"
    file.write_bytes(content)
    monkeypatch.setattr(engine, "prepare", lambda *a, **k: pytest.fail("computed before the argument was checked"))
    with pytest.raises(FragilityError, match=r"partial='.*mine\.npz'.*not a partial sweep fragility wrote"):
        fr_sweep(trained_cnn, *test_set, partial=file, **SETTINGS)
    with pytest.raises(FragilityError, match="not a partial sweep"):
        partial.discard(file)
    assert file.read_bytes() == content


def test_an_npz_of_ones_own_is_refused_too(tmp_path):
    file = tmp_path / "arrays.npz"
    np.savez(file, header=np.array('{"format": "mine"}'), unit0=np.zeros(3))
    before = file.read_bytes()
    with pytest.raises(FragilityError, match="not a partial sweep"):
        partial.check(file)
    assert file.read_bytes() == before


@pytest.mark.parametrize("bad", [3, b"x.npz", ""])
def test_a_partial_that_is_not_a_path_is_one_error(bad):
    with pytest.raises(FragilityError, match=r"partial=.*expected a file path"):
        partial.check(bad)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(FragilityError, match="is a folder"):
        partial.check(tmp_path)


def test_a_sweep_task_stopped_part_way_resumes_to_the_stored_unit_and_leaves_no_partial_file(small, tmp_path,
                                                                                           monkeypatch, capsys):
    profile, done = small
    results = tmp_path / "results"
    shutil.copytree(done, results)
    unit = ("smallcnn", "digits", 0, 2)
    expected = store.read_unit(store.unit_path(done, *unit))
    store.unit_path(results, *unit).unlink()
    stopping_after(monkeypatch, 1)
    with pytest.raises(Stop):
        pipeline.sweep_task(profile, results, unit)
    kept = pipeline.partial_path(results, unit)
    assert kept.exists() and not store.unit_path(results, *unit).exists()
    assert "sweep/smallcnn/digits/0/2" in [t.key for t in pipeline.plan(profile, results)], \
        "a unit with only some of its layers kept is not done"
    [row] = [r for r in pipeline.status(profile, results) if (r.seed, r.epoch) == (0, 2)]
    assert (row.swept, row.kept) == (False, 1)
    cli.print_status([row], [], {})
    assert "no (1 layer kept)" in capsys.readouterr().out
    calls = unstopped(monkeypatch)
    pipeline.sweep_task(profile, results, unit)
    assert calls == list(expected["layer"].values[1:])
    assert not kept.exists()
    assert [r.kept for r in pipeline.status(profile, results)] == [0] * len(list(profile.units()))
    found = store.read_unit(store.unit_path(results, *unit))
    xr.testing.assert_identical(untimed(found).drop_attrs(), untimed(expected).drop_attrs())
