"""A metric from what one names it by — an object, a kind's name, ``top<k>``, an import path, a profile's settings — and
the metric a sweep Dataset holds."""
from __future__ import annotations

import dataclasses
import json

from .. import checks, imports, store
from ..errors import FragilityError
from .accuracy import Accuracy
from .base import DEFAULT, METRICS, TOP, Metric
from .function import FunctionMetric, metric
from .topk import TopK


def from_settings(settings: dict, where: str = "metric") -> Metric:
    """A metric from its `settings`: ``{name: <kind>, <parameter>: …}`` for a registered kind, or ``{function:
    'module:function', name: …, higher_is_better: …, chance: …}`` for a function of one's own (imported)."""
    given = dict(settings)
    if "function" in given:
        unknown = sorted(map(str, set(given) - {"function", "name", "higher_is_better", "chance"}))
        if unknown:
            raise FragilityError(f"{where} has unknown key(s) {', '.join(unknown)}: a function's metric takes "
                                 "function, name, higher_is_better and chance.")
        found = imports.resolve(given["function"], f"{where}.function")
        try:
            made = metric(found, name=given.get("name"), higher_is_better=given.get("higher_is_better"),
                          chance=given.get("chance"))
        except FragilityError as err:
            raise FragilityError(f"{where}: {err}") from None
        return dataclasses.replace(made, source=given["function"])
    kind = given.pop("name", None)
    if not (isinstance(kind, str) and kind in METRICS):
        raise FragilityError(f"{where} must name a metric kind ({', '.join(METRICS)}) with its parameters, e.g. "
                             f"{{name: topk, k: 5}}, or a function {{function: 'module:function', name: …, "
                             f"higher_is_better: …}}; got name {checks._shown(kind)}.")
    known = [f.name for f in dataclasses.fields(METRICS[kind])]
    unknown = sorted(map(str, set(given) - set(known)))
    if unknown:
        raise FragilityError(f"{where}: metric {kind} has unknown parameter(s) {', '.join(unknown)}: its parameters "
                             f"are {', '.join(known) or 'none'}.")
    try:
        return METRICS[kind](**given)
    except FragilityError as err:
        raise FragilityError(f"{where}: {err}") from None


def as_metric(value, where: str = "metric") -> Metric:
    """A Metric from a Metric, None (top-1 accuracy), a registered kind's name (its defaults), ``top<k>``, an import
    path 'module:attribute' naming a Metric (or a Metric class, made with its defaults), or settings (see
    `from_settings`); else one FragilityError."""
    if value is None:
        return Accuracy()
    if isinstance(value, Metric):
        return value
    if isinstance(value, dict):
        return from_settings(value, where)
    if isinstance(value, str):
        top = TOP.fullmatch(value)
        if value in METRICS or top:
            return METRICS[value]() if value in METRICS else TopK(int(top[1]))
        if imports.IMPORT_PATH.fullmatch(value):
            found = imports.resolve(value, where)
            if isinstance(found, type) and issubclass(found, Metric):
                found = found()
            if isinstance(found, Metric):
                return found
            raise FragilityError(f"{where} {value!r} names {type(found).__name__}, not a Metric: name a metric made "
                                 f"by fr.metric(fn, name=..., higher_is_better=...), or give the function with its "
                                 f"name and direction, {{function: '{value}', name: …, higher_is_better: …}}.")
    hint = (": wrap a function with fr.metric(fn, name=..., higher_is_better=...)" if callable(value) else "")
    raise FragilityError(f"{where} must be a metric such as fr.TopK(5) or fr.metric(fn, name=..., "
                         f"higher_is_better=...), the name of a registered one ({', '.join(METRICS)}, or top<k>), or "
                         f"an import path 'module:attribute' naming one; got {checks._shown(value)}{hint}.")


def profile_setting(value, where: str = "metric") -> tuple:
    """A profile's `metric` value as the sorted items of its settings (what `Profile.metric` holds and the sweep hash
    reads), refused in one line when it names no metric or one that another process could not rebuild."""
    found = as_metric(value, where)
    settings = found.settings
    if isinstance(found, FunctionMetric) and not (
            imports.IMPORT_PATH.fullmatch(settings["function"])
            and imports.resolve(settings["function"], where) is found.function):
        raise FragilityError(f"{where}: the function {settings['function']} cannot be imported by that path (a "
                             "lambda or a local function): define it at the top level of an importable module.")
    json.dumps(settings)
    return tuple(sorted(settings.items()))


def stored(ds) -> tuple[str, str, bool]:
    """(the response's variable, the unperturbed network's, whether higher is better) of a sweep Dataset (or
    combined results), as its `metric` attributes record them; one FragilityError when they are incomplete."""
    attrs = getattr(ds, "attrs", {})
    name = attrs.get("metric", DEFAULT)
    if name == DEFAULT:
        return "accuracy", "base_accuracy", True
    if "metric_higher_is_better" not in attrs:
        raise FragilityError(f"these results hold the metric {name!r} but not whether it is higher-is-better (the "
                             "attribute metric_higher_is_better): keep the attributes fr.sweep stored.")
    names = store.metric_variables(str(name))
    return names["accuracy"], names["base_accuracy"], bool(attrs["metric_higher_is_better"])


def shown(ds) -> tuple[str, str]:
    """How figures and text name the response of `ds` (a sweep Dataset, combined results or curves): ("accuracy",
    "scaled accuracy") for top-1 accuracy, else the metric's own name and how it is scaled (a lower-is-better one by
    its reciprocal, `fragility.scores.scaled`), e.g. ("nll", "scaled nll (inverse ratio)")."""
    name, _, higher = stored(ds)
    return name, f"scaled {name}" + ("" if higher else " (inverse ratio)")
