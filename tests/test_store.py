"""Tests of the response store: unit files, atomic writes, validation, and combining units into one Dataset."""
import numpy as np
import pytest
import xarray as xr

from fragility import files, store
from fragility.plot import draw
from fragility.errors import FragilityError


def sweep_like(layers, A=4, seed=0):
    """A Dataset shaped like fragility.sweep's output, with random values."""
    rng = np.random.default_rng(seed)
    units = list(layers) + ["global"]
    shape = (len(units), 3, A + 1)
    return xr.Dataset(
        {
            "accuracy": (("layer", "filter", "alpha", "input"), rng.random(shape + (2,))),
            "n_filtered": (("layer", "filter", "alpha"), rng.integers(0, 100, shape)),
            "n_params": (("layer",), np.full(len(units), 100)),
            "threshold": (("layer", "filter", "alpha"), rng.random(shape)),
            "base_accuracy": (("input",), rng.random(2)),
            "epsilon": ((), 0.25),
            "chance": ((), 0.1),
            "correct": (("layer", "filter", "alpha", "input", "image"), rng.random(shape + (2, 5)) > 0.5),
            "base_correct": (("input", "image"), rng.random((2, 5)) > 0.5),
        },
        coords={"layer": units, "filter": ["h1", "h2", "h3"], "alpha": np.arange(A + 1) / A,
                "input": ["clean", "adversarial"], "image": np.arange(5)},
        attrs={"A": A, "attack": "fixed", "git_commit": "abc"},
    )


def unit(model="m", dataset="digits", seed=0, epoch=1, layers=("conv1", "fc"), **attrs):
    return store.as_unit(sweep_like(layers, seed=seed * 100 + epoch), model, dataset, seed, epoch,
                         profile="test", **attrs)


def put(root, **key):
    ds = unit(**key)
    path = store.unit_path(root, *(ds[k].item() for k in store.KEYS))
    store.write_unit(ds, path)
    return ds, path


def test_unit_path():
    assert str(store.unit_path("R", "resnet18", "mnist", 2, 30)) == "R/responses/resnet18/mnist/seed2/epoch030.nc"


def test_roundtrip(tmp_path):
    ds, path = put(tmp_path, seed=1, epoch=7)
    back = store.read_unit(path)
    xr.testing.assert_identical(back, ds)
    assert back["layer_index"].values.tolist() == [0, 1, 2]
    assert back.attrs["profile"] == "test" and back.attrs["schema"] == store.SCHEMA
    assert [p.name for p in path.parent.iterdir()] == ["epoch007.nc"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode  # readable by whom a plain file would be


def test_write_is_atomic(tmp_path, monkeypatch):
    ds, path = put(tmp_path)
    before = path.read_bytes()

    def broken(self, target, **kwargs):
        open(target, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(FragilityError, match=f"cannot write {path} \\(disk full; nothing partial was kept\\)"):
        store.write_unit(unit(epoch=1, seed=0), path)
    assert path.read_bytes() == before and list(path.parent.iterdir()) == [path]


def test_write_refuses_a_plain_sweep(tmp_path):
    with pytest.raises(FragilityError, match="as_unit"):
        store.write_unit(sweep_like(["fc"]), tmp_path / "x.nc")


def test_corrupt_and_foreign_files_are_named(tmp_path):
    put(tmp_path)
    corrupt = store.unit_path(tmp_path, "m", "digits", 0, 2)
    corrupt.write_bytes(np.random.default_rng(0).bytes(3000))
    for call in (store.read_unit, store.read_attrs, store.scan, store.open_results):
        with pytest.raises(FragilityError, match=f"{corrupt}.*delete it"):
            call(corrupt if call in (store.read_unit, store.read_attrs) else tmp_path)
    corrupt.unlink()
    foreign = tmp_path / "other.nc"
    xr.Dataset({"t": ("x", [1.0, 2.0])}).to_netcdf(foreign, engine="h5netcdf")
    with pytest.raises(FragilityError, match=f"{foreign} is not a fragility response unit.*delete it"):
        store.open_results(tmp_path)


def test_empty_folder_says_what_to_run(tmp_path):
    with pytest.raises(FragilityError, match="fragility run --profile"):
        store.open_results(tmp_path)


def test_temporary_files_are_ignored_and_cleaned(tmp_path):
    ds, path = put(tmp_path)
    leftover = path.parent / ".epoch002.nc.fragility-x1y2z3_4.tmp"  # as files.atomic names them
    leftover.write_bytes(b"partial")
    assert files.temporary(leftover)
    assert list(store.scan(tmp_path)) == [("m", "digits", 0, 1)]
    assert files.clean(tmp_path) == [leftover]
    assert not leftover.exists() and path.exists()


def test_duplicates_are_refused(tmp_path):
    ds, path = put(tmp_path)
    store.write_unit(ds, tmp_path / "copy.nc")
    with pytest.raises(FragilityError, match=r"(epoch001|copy)\.nc and .*(copy|epoch001)\.nc both hold"):
        store.open_results(tmp_path)


def test_open_results_combines_models_with_different_layers(tmp_path):
    stored = {}
    for model, layers in (("a", ("conv1", "block.conv", "fc")), ("b", ("zeta", "fc"))):
        for seed in (0, 1):
            for epoch in (1, 2):
                if (model, seed, epoch) != ("b", 1, 2):  # an incomplete run: one unit missing
                    stored[model, seed, epoch] = put(tmp_path, model=model, layers=layers, seed=seed, epoch=epoch,
                                                     config_hash=f"h{seed}")[0]
    ds = store.open_results(tmp_path)
    assert ds["accuracy"].dims == store.DIMS
    assert ds.sizes["model"] == 2 and ds.sizes["seed"] == 2 and ds.sizes["epoch"] == 2
    assert sorted(ds["layer"].values.tolist()) == ["block.conv", "conv1", "fc", "global", "zeta"]
    assert "config_hash" not in ds.attrs and ds.attrs["profile"] == "test"
    for (model, seed, epoch), one in stored.items():
        got = ds["accuracy"].sel(model=model, dataset="digits", seed=seed, epoch=epoch, layer=one["layer"].values)
        np.testing.assert_array_equal(got.values, one["accuracy"].values)
    assert ds["accuracy"].sel(model="b", layer="conv1").isnull().all()
    assert ds["epsilon"].sel(model="b", seed=1, epoch=2).isnull()
    assert store.layer_order(ds, "a") == ["conv1", "block.conv", "fc", "global"]
    assert store.layer_order(ds, "b") == ["zeta", "fc", "global"]
    assert store.layer_order(store.read_unit(store.unit_path(tmp_path, "b", "digits", 0, 1)), "b") == \
        ["zeta", "fc", "global"]
    with pytest.raises(FragilityError, match="model 'c' is not in these results"):
        store.layer_order(ds, "c")


@pytest.mark.parametrize("incomplete", [False, True])
def test_open_results_equals_xarrays_own_combination(tmp_path, incomplete):
    forward = ("conv1", "block.conv", "fc")  # a forward order that is not alphabetical
    for model, layers in (("a", forward), ("b", ("zeta", "fc")) if incomplete else ("b", forward)):
        for seed in (0, 2):
            for epoch in (1, 3):
                if not (incomplete and (model, seed, epoch) == ("a", 2, 3)):
                    put(tmp_path, model=model, layers=layers, seed=seed, epoch=epoch, config_hash=f"h{seed}")
    lazy = store.open_results(tmp_path)
    expected = store.read_whole(tmp_path)
    xr.testing.assert_identical(lazy.load(), expected)
    assert (lazy["n_filtered"].dtype.kind == "f") == incomplete  # integers become float only to hold NaN
    assert lazy["layer"].values.tolist() == (["block.conv", "conv1", "fc", "global", "zeta"] if incomplete
                                             else list(forward) + ["global"])  # a shared order is kept
    picked = dict(model="b", seed=2, epoch=1, layer="fc", filter="h2")
    xr.testing.assert_identical(store.open_results(tmp_path).sel(picked), expected.sel(picked))


def test_open_results_reads_only_what_is_used(tmp_path, monkeypatch):
    for seed in (0, 1):
        for epoch in (1, 2):
            put(tmp_path, seed=seed, epoch=epoch)
    reads = []
    real = store._read_variable
    monkeypatch.setattr(store, "_read_variable", lambda header, name: reads.append((header.key, name)) or
                        real(header, name))
    ds = store.open_results(tmp_path)
    assert reads == []
    _ = ds["accuracy"].sel(seed=1, epoch=2, layer="fc").values
    assert reads == [(("m", "digits", 1, 2), "accuracy")]
    _ = ds["accuracy"].values
    _ = ds["accuracy"].values  # kept once read
    assert len(reads) == 1 + 4
    store.unit_path(tmp_path, "m", "digits", 0, 1).write_bytes(b"damaged after opening")
    with pytest.raises(FragilityError, match="epoch001.nc is not a readable netCDF file.*move it out"):
        _ = ds["epsilon"].values


def test_mixed_settings_are_refused(tmp_path):
    put(tmp_path)
    ds = store.as_unit(sweep_like(["conv1", "fc"], A=8), "m", "digits", 0, 2)
    store.write_unit(ds, store.unit_path(tmp_path, "m", "digits", 0, 2))
    with pytest.raises(FragilityError, match="differ in alpha"):
        store.open_results(tmp_path)


DAMAGE = {
    "zero bytes": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:300]),
    "random bytes": lambda path: path.write_bytes(np.random.default_rng(0).bytes(2000)),
    "foreign netCDF": lambda path: xr.Dataset({"x": ("t", [1.0])}).to_netcdf(path, engine="h5netcdf"),
    "another unit's file": lambda path: path.write_bytes(store.unit_path(path.parents[4], "m", "digits", 0, 1)
                                                         .read_bytes()),
    "a study file": lambda path: xr.Dataset({"accuracy": ("p", [0.5])}, attrs={"schema": "fragility-study/1"})
    .to_netcdf(path, engine="h5netcdf"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_kind_of_damage_is_named_and_nothing_is_lost(tmp_path, damage):
    put(tmp_path, epoch=1)
    _, path = put(tmp_path, epoch=2)
    DAMAGE[damage](path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for call in (lambda: store.scan(tmp_path), lambda: store.open_results(tmp_path)):
        with pytest.raises(FragilityError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and "\n" not in message and "move it out of the results folder" in message
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or lost


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FragilityError, match="absent does not exist"):
        store.open_results(tmp_path / "absent")


def test_units_from_several_commits_are_named_and_the_figures_say_so(tmp_path):
    for seed, commit in ((0, "1111111111aa"), (1, "2222222222bb"), (2, "1111111111aa")):
        put(tmp_path, seed=seed, git_commit=commit)
    lazy, whole = store.open_results(tmp_path), store.read_whole(tmp_path)
    for ds in (lazy, whole):
        assert "git_commit" not in ds.attrs and ds.attrs["git_commits"] == "1111111111aa, 2222222222bb"
    assert draw.provenance_line(lazy).endswith("2 commits in these results (each unit records its own)")
    assert draw.provenance_line(lazy.assign_attrs(git_commit="1111111111aa")).endswith("commit 1111111111")
    put(tmp_path / "one", seed=0, git_commit="3333333333cc")
    one = store.open_results(tmp_path / "one")
    assert "git_commits" not in one.attrs and "commit 3333333333" in draw.provenance_line(one)
