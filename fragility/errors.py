"""The one exception type the library raises for bad input."""


class FragilityError(ValueError):
    """A problem with the caller's input, stated with the fix. The command line prints only this message."""
