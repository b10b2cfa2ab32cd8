"""Property tests: any damage to a stored response or study unit is named in one line and loses nothing, and any
mutation of a valid profile either loads or is refused with one FragilityError line — never another exception."""
import copy
import shutil
import tempfile
from pathlib import Path

import pytest
import xarray as xr
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fragility as fr
from conftest import TINY_RUN
from fragility import FragilityError, pipeline, profiles, store, studies
from fragility import study as base
from test_store import put
from test_studies import SEEDED as PROFILE
from test_studies import store_unit

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def damages(other: Path, study_like: Path):
    """Each kind of damage to the file at a path: (name, strategy of a function that damages it)."""
    return st.one_of(
        st.just(("zero bytes", lambda path: path.write_bytes(b""))),
        st.integers(0, 10**6).map(lambda n: ("truncated", lambda path: path.write_bytes(
            path.read_bytes()[:n % max(1, path.stat().st_size)]))),
        st.binary(min_size=1, max_size=3000).map(lambda b: ("random bytes", lambda path: path.write_bytes(b))),
        st.just(("foreign netCDF", lambda path: xr.Dataset({"x": ("t", [1.0])}).to_netcdf(path, engine="h5netcdf"))),
        st.just(("another unit's file", lambda path: path.write_bytes(other.read_bytes()))),
        st.just(("the other store's file", lambda path: path.write_bytes(study_like.read_bytes()))),
    )


def one_line_naming(call, path: Path) -> None:
    with pytest.raises(FragilityError) as error:
        call()
    message = str(error.value)
    assert str(path) in message and "\n" not in message and store.MOVE in message, message


def contents(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A results folder with two response units and two removal study units of PROFILE."""
    root = tmp_path_factory.mktemp("stores")
    put(root, model="smallcnn", epoch=1)
    put(root, model="smallcnn", epoch=2)
    store_unit(root, key=("smallcnn", "digits", 0))
    store_unit(root, key=("smallcnn", "digits", 1))
    return root


@SETTINGS
@given(data=st.data())
def test_any_damage_to_a_response_unit_is_named_and_nothing_is_lost(stores, data):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(shutil.copytree(stores, Path(folder) / "results"))
        path = store.unit_path(root, "smallcnn", "digits", 0, 2)
        kind, damage = data.draw(damages(store.unit_path(root, "smallcnn", "digits", 0, 1),
                                         base.study_path(root, "removal", "smallcnn", "digits", 0)))
        damage(path)
        before = contents(root)
        profile = profiles.parse_profile({**TINY_RUN, "name": "test", "models": ["smallcnn"], "seeds": [0],
                                          "studies": None})
        for call in (lambda: store.scan(root), lambda: fr.open_results(root), lambda: store.read_unit(path),
                     lambda: pipeline.status(profile, root)):
            one_line_naming(call, path)
        assert contents(root) == before, kind


@SETTINGS
@given(data=st.data())
def test_any_damage_to_a_study_unit_is_named_and_nothing_is_lost(stores, data):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(shutil.copytree(stores, Path(folder) / "results"))
        path = base.study_path(root, "removal", "smallcnn", "digits", 1)
        kind, damage = data.draw(damages(base.study_path(root, "removal", "smallcnn", "digits", 0),
                                         store.unit_path(root, "smallcnn", "digits", 0, 1)))
        damage(path)
        before = contents(root)
        for call in (lambda: studies.stored(PROFILE, root), lambda: pipeline.study_status(PROFILE, root),
                     lambda: fr.open_study(root, "removal"), lambda: studies.find_study(root, "removal")):
            one_line_naming(call, path)
        assert contents(root) == before, kind


def test_a_study_unit_of_other_settings_is_stale_not_done(stores, tmp_path):
    root = shutil.copytree(stores, tmp_path / "results")
    other = profiles.parse_profile({**TINY_RUN, "models": ["smallcnn"], "seeds": [0, 1], "studies": {
        "removal": {"draws": 1}}, "A": 8})  # another sweep: what the study reads changed
    path = base.study_path(root, "removal", "smallcnn", "digits", 0)
    with pytest.raises(FragilityError, match=f"{path} was computed with other settings"):
        studies.stored(other, root)
    assert studies.stored(PROFILE, root) == {("removal", ("smallcnn", "digits", s)) for s in (0, 1)}


# profiles

VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**4), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=8), st.sampled_from(["smallcnn", "resnet18", "digits", "mnist", "h1", "auto", "fixed",
                                                    "batch", "running", "1e-3", "fc", "blocks.0.conv", "", "."])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6) | st.sampled_from(
        ["seeds", "epochs", "every", "models", "layers", "layer", "epoch", "p", "draws", "depths"]), inner,
        max_size=3)),
    max_leaves=8)


def _paths(value, prefix=()):
    """Every (path, value) inside nested mappings and lists."""
    yield prefix, value
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, prefix + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, prefix + (i,))


@st.composite
def mutated(draw):
    """TINY_RUN (every study on) with a few random mutations: a value replaced, a key removed or added."""
    raw = copy.deepcopy(TINY_RUN)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(raw) if p]
        where = draw(st.sampled_from(paths))
        parent = raw
        for step in where[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace" or not isinstance(parent, dict):
            parent[where[-1]] = draw(VALUES)
        elif action == "remove":
            del parent[where[-1]]
        else:
            parent[draw(st.text(max_size=5) | st.sampled_from(list(profiles.CHECKS)))] = draw(VALUES)
    return raw


def loads_or_one_line(call):
    try:
        return call()
    except FragilityError as err:
        assert str(err) and "\n" not in str(err) and "Traceback" not in str(err)
        return None


@settings(max_examples=300, deadline=None)
@given(raw=mutated())
def test_any_mutation_of_a_profile_loads_or_is_one_line(raw):
    profile = loads_or_one_line(lambda: profiles.parse_profile(raw))
    if profile is not None:  # a profile that loads plans and hashes without surprise
        assert isinstance(profile.sweep_hash, str) and list(profile.units())
        studies.units(profile)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_a_profile_file_loads_or_is_one_line(tmp_path, data):
    text = yaml.safe_dump(TINY_RUN, sort_keys=False)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.text(min_size=1, max_size=4) | st.sampled_from(
            [":", "-", "[", "{", "&a", "*a", "!!python/object:os.system", "\t", "\n  ", "'", "1e-3", "? "]))
        text = (text[:at] + piece + text[at:] if edit == "insert" else text[:at] + text[at + len(piece):]
                if edit == "delete" else text[:at] + piece + text[at + len(piece):])
    path = tmp_path / "edited.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    loads_or_one_line(lambda: profiles.load_profile(path))


def test_the_unmutated_profile_loads():
    assert profiles.parse_profile(copy.deepcopy(TINY_RUN)).name == "tiny"


def test_a_mapping_as_a_key_is_one_line(tmp_path):
    """A YAML key that is itself a mapping (found by the edit test above) is refused as YAML, in one line."""
    path = tmp_path / "odd.yaml"
    path.write_text("? {a: 1}\n: 2\n")
    with pytest.raises(FragilityError, match="unhashable key") as err:
        profiles.load_profile(path)
    assert "\n" not in str(err.value)
