"""The layout of a sweep's convolutions (`fr.sweep(memory_format=...)`, a profile's `memory_format`, per model too):
contiguous equals the oracle as channels-last does, is recorded where it is not the default, enters the sweep hash
of the models that use it and no other's, and a bad value is one error before anything is computed."""
import numpy as np
import pytest

import fragility as fr
from fragility import FragilityError, engine, pipeline, store
from test_engine import ARCHITECTURES, random_network
from test_model_filters import profile

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "squeezenet1_1"])
def test_a_contiguous_sweep_equals_the_oracle(name):
    size, layers = ARCHITECTURES[name]
    model, x, y = random_network(name, size)
    options = dict(A=3, layers=layers, epsilon=0.05, filters=("h1", "h3"), batch_size=4, progress=False)
    fast = fr.sweep(model, x, y, memory_format="contiguous", **options)
    plain = fr.sweep_naive(model, x, y, **options)
    np.testing.assert_array_equal(fast["correct"].values, plain["correct"].values)
    np.testing.assert_array_equal(fast["base_correct"].values, plain["base_correct"].values)
    assert fast.attrs["memory_format"] == "contiguous"
    assert fast.accuracy.min() < fast.base_accuracy.sel(input="clean"), "the sweep must change something"


def test_the_default_layout_is_not_recorded(trained_cnn, test_set):
    ds = fr.sweep(trained_cnn, *test_set, A=2, filters=("h1",), epsilon=0.1, progress=False)
    assert "memory_format" not in ds.attrs  # the attributes of the results shipped before the option


@pytest.mark.parametrize("bad", ["channels_first", None, 1, "CONTIGUOUS"])
def test_a_bad_layout_is_one_error_before_anything_is_computed(trained_cnn, test_set, monkeypatch, bad):
    monkeypatch.setattr(engine, "prepare", lambda *a, **k: pytest.fail("computed before the argument was checked"))
    with pytest.raises(FragilityError, match=r"memory_format.*channels_last.*contiguous"):
        fr.sweep(trained_cnn, *test_set, memory_format=bad)


def test_a_model_of_a_profile_sets_its_own_layout_and_only_its_hash_changes():
    plain = profile()
    mixed = profile_with_layout({"narrow": "contiguous"})
    assert mixed.memory_format_of("narrow") == "contiguous" and mixed.memory_format_of("wave") == "channels_last"
    assert mixed.sweep_hash_of("wave") == plain.sweep_hash_of("wave") == plain.sweep_hash
    assert mixed.sweep_hash_of("narrow") != plain.sweep_hash_of("narrow")
    assert profile_with_layout({"narrow": "channels_last"}).sweep_hash_of("narrow") == plain.sweep_hash_of("narrow")
    whole = profile(memory_format="contiguous")
    assert whole.memory_format_of("wave") == whole.memory_format_of("narrow") == "contiguous"
    assert whole.sweep_hash_of("wave") == mixed.sweep_hash_of("narrow") != plain.sweep_hash


def profile_with_layout(layouts: dict):
    from test_model_filters import OWN, WAVE
    from fragility import profiles
    return profiles.parse_profile({**OWN, "name": "mixed", "epsilon": 0.1, "epochs": [2, 3], "models": {
        "wave": {**WAVE, **({"memory_format": layouts["wave"]} if "wave" in layouts else {})},
        "narrow": {"factory": "ownpkg.models:wave", "kwargs": {"width": 3},
                   **({"memory_format": layouts["narrow"]} if "narrow" in layouts else {})}}})


@pytest.mark.parametrize("where", ["narrow", "profile"])
def test_a_bad_layout_in_a_profile_names_its_key(where):
    pattern = r"models\.narrow\.memory_format must be channels_last" if where == "narrow" else \
        r"memory_format must be channels_last"
    with pytest.raises(FragilityError, match=pattern + r".*got 'nhwc'"):
        profile_with_layout({"narrow": "nhwc"}) if where == "narrow" else profile(memory_format="nhwc")


def test_the_units_of_a_contiguous_model_record_it_and_stay_done(tmp_path):
    chosen = profile_with_layout({"narrow": "contiguous"})
    results = tmp_path / "results"
    pipeline.run(chosen, results, progress=False)
    for key, header in store.scan(results).items():
        assert header.attrs.get("memory_format") == ("contiguous" if key[0] == "narrow" else None), key
        assert header.attrs["sweep_hash"] == chosen.sweep_hash_of(key[0])
    assert pipeline.plan(chosen, results) == []
    with pytest.raises(FragilityError, match="narrow.*computed with other settings"):
        pipeline.plan(profile_with_layout({}), results)
