"""The one way a plug-in class is registered by name (attacks, stresses, metrics): a class decorator that checks what
it decorates and refuses a name taken by another class. Imports nothing of the package but its errors, so that every
registry can use it."""
from __future__ import annotations

from .errors import FragilityError


def class_registrar(registry: dict, base: type, name: str, what: str, attribute: str):
    """A class decorator that stores a `base` subclass in `registry` under `name` and sets `cls.<attribute>` to it.

    The same class registered again (a module imported twice) is accepted; another class under a taken name is one
    FragilityError. `what` is the kind in messages ("an attack", "a stress", "a metric").
    """
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            article = "an" if base.__name__[0] in "AEIOU" else "a"
            raise FragilityError(f"register_{what.split()[-1]}({name!r}) decorates {article} {base.__name__} subclass; "
                                 f"got {cls!r}.")
        known = registry.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise FragilityError(f"{what} named {name!r} is already registered ({known.__module__}."
                                 f"{known.__qualname__}): choose another name.")
        setattr(cls, attribute, name)
        registry[name] = cls
        return cls

    return add
