"""Which parameters a sweep stresses: layers chosen by module type and by qualified-name pattern.

By default the filterable layers are every `nn.Conv2d` and `nn.Linear` (the paper's Sec. 4.3). A selection

    {types: [Conv1d, Linear, Embedding], include: "encoder.*", exclude: "*.downsample.*"}

chooses instead every module that is of one of `types`, whose qualified name (`encoder.0.conv`) matches one of the
`include` patterns and none of the `exclude` patterns (shell-style `fnmatch` patterns, case-sensitive: `*` also
crosses dots), and that holds a `weight` parameter. A type is a class or its name: the name of a `torch.nn` module
class means that class and its subclasses (`Conv2d`, `LayerNorm`, `Embedding`, …); any other name matches a module
whose class, or one of its bases, is called so (a class of your own). The selected layers' weights are what the
stresses act on, each layer on its own (local analysis) and all of them at once (`global`, the global analysis).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from torch import nn

from .errors import FragilityError

KEYS = ("types", "include", "exclude")
WHAT = ("a mapping of some of types (module classes or class names, e.g. [Conv2d, Linear, Conv1d, Embedding]), "
        "include and exclude (fnmatch patterns of qualified module names, e.g. 'encoder.*', or lists of them)")


def _torch_class(name: str) -> type | None:
    """The torch.nn module class called `name`, if there is one."""
    found = getattr(nn, name, None)
    return found if isinstance(found, type) and issubclass(found, nn.Module) else None


def _label(kind) -> str:
    """A type entry as text: a name as given, a torch.nn class by its name, another class by its full name."""
    if isinstance(kind, str):
        return kind
    return kind.__name__ if _torch_class(kind.__name__) is kind else f"{kind.__module__}.{kind.__qualname__}"


@dataclass(frozen=True)
class Layers:
    """A selection of a network's layers by type and name pattern (see the module's docstring)."""

    types: tuple = (nn.Conv2d, nn.Linear)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    @property
    def settings(self) -> dict:
        """The selection as plain, ordered data (what a profile's sweep hash holds): order does not matter."""
        return {"types": sorted({_label(t) for t in self.types}), "include": sorted(set(self.include)),
                "exclude": sorted(set(self.exclude))}

    def of_type(self, kind: type) -> bool:
        """Whether modules of class `kind` are of one of the selection's types."""
        bases = {c.__name__ for c in kind.__mro__}
        for t in self.types:
            if isinstance(t, str):
                cls = _torch_class(t)
                if (cls is not None and issubclass(kind, cls)) or (cls is None and t in bases):
                    return True
            elif issubclass(kind, t):
                return True
        return False

    def named(self, name: str) -> bool:
        """Whether the qualified name `name` matches an include pattern and no exclude pattern."""
        return (any(fnmatch.fnmatchcase(name, p) for p in self.include)
                and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude))

    def names(self, layout: dict[str, type]) -> list[str]:
        """The qualified names of a network's layout (name → class, `fragility.models.layout`) the selection
        takes by type and name (whether each holds a weight is known only once the network is built)."""
        return [n for n, kind in layout.items() if n and self.of_type(kind) and self.named(n)]

    def select(self, model: nn.Module) -> dict[str, nn.Module]:
        """The selected modules of `model` by qualified name, in `named_modules` order: of a selected type, named
        as the patterns say, and holding a `weight` parameter. Refuses a type name that is neither a torch.nn
        module class nor the name of a class of the model's modules (a misspelling would select nothing)."""
        modules = {n: m for n, m in model.named_modules() if n}
        unknown = self.unknown_types({type(m) for m in modules.values()})
        if unknown:
            raise FragilityError(f"layers.types: {', '.join(map(repr, unknown))} is neither a torch.nn module class "
                                 "nor the class of a module of the model: check the spelling (e.g. Conv2d, Linear, "
                                 "Conv1d, Embedding).")
        return {n: m for n, m in modules.items() if self.of_type(type(m)) and self.named(n)
                and isinstance(getattr(m, "weight", None), nn.Parameter)}

    def unknown_types(self, kinds) -> list[str]:
        """The type names that are neither torch.nn module classes nor the name of one of `kinds` or their bases."""
        known = {c.__name__ for k in kinds for c in k.__mro__}
        return [t for t in self.types if isinstance(t, str) and _torch_class(t) is None and t not in known]

    def describe(self) -> str:
        """The selection in words, for messages."""
        s = self.settings
        return (f"types {', '.join(s['types'])}, include {', '.join(s['include'])}"
                + (f", exclude {', '.join(s['exclude'])}" if s["exclude"] else ""))


def _patterns(value, key: str, name: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not (isinstance(items, (list, tuple)) and items and all(isinstance(p, str) and p.strip() for p in items)
            and len(set(items)) == len(items)):
        raise FragilityError(f"{name}.{key} must be a pattern such as 'encoder.*' or a list of distinct ones; got "
                             f"{value!r}.")
    return tuple(items)


def as_layers(value, name: str = "layers") -> Layers:
    """A `Layers` from a mapping of some of `types`, `include` and `exclude` (or a `Layers`), checked; one
    FragilityError naming the key at fault otherwise."""
    if isinstance(value, Layers):
        return value
    if not isinstance(value, dict):
        raise FragilityError(f"{name} must be {WHAT}; got {value!r}.")
    unknown = [str(k) for k in value if k not in KEYS]
    if unknown:
        raise FragilityError(f"{name} has unknown key(s) {', '.join(unknown)}: the keys are {', '.join(KEYS)}.")
    found = Layers()
    if "types" in value:
        types = [value["types"]] if isinstance(value["types"], (str, type)) else value["types"]
        ok = (isinstance(types, (list, tuple)) and types and len({_label(t) if isinstance(t, (str, type)) else None
                                                                  for t in types}) == len(types)
              and all((isinstance(t, str) and re.fullmatch(r"[A-Za-z_]\w*", t))
                      or (isinstance(t, type) and issubclass(t, nn.Module)) for t in types))
        if not ok:
            raise FragilityError(f"{name}.types must be a module class name such as Conv2d, or a list of distinct "
                                 f"ones (or nn.Module classes); got {value['types']!r}.")
        found = Layers(tuple(types), found.include, found.exclude)
    include = _patterns(value["include"], "include", name) if "include" in value else found.include
    exclude = _patterns(value["exclude"], "exclude", name) if "exclude" in value else ()
    return Layers(found.types, include, exclude)


def check_models(layers: Layers, layouts: dict[str, dict[str, type]], name: str = "layers") -> None:
    """Refuse a selection that takes no layer of one of the networks (model → layout), names an unknown type, or
    has a pattern that matches no module of any of them: a profile's `layers`, checked when it is read."""
    kinds = {kind for layout in layouts.values() for kind in layout.values()}
    unknown = layers.unknown_types(kinds)
    if unknown:
        raise FragilityError(f"{name}.types: {', '.join(map(repr, unknown))} is neither a torch.nn module class nor "
                             "the class of a module of the profile's models: check the spelling.")
    every = [n for layout in layouts.values() for n in layout if n]
    for key in ("include", "exclude"):
        idle = [p for p in getattr(layers, key) if not any(fnmatch.fnmatchcase(n, p) for n in every)]
        if idle and (key == "exclude" or layers.include != ("*",)):
            raise FragilityError(f"{name}.{key}: {', '.join(map(repr, idle))} matches no module of the profile's "
                                 f"models (qualified names such as {', '.join(every[:4])}).")
    for model, layout in layouts.items():
        if not layers.names(layout):
            raise FragilityError(f"{name} ({layers.describe()}) selects no layer of {model}: its modules are "
                                 f"{', '.join(n for n in list(layout)[:8] if n)}….")
