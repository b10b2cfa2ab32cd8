"""The one exception type the library raises for bad input, and how the command lines report it."""
import sys


class FragilityError(ValueError):
    """A problem with the caller's input, stated with the fix, on one line. The command line prints only this."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    def _render_traceback_(self) -> list[str]:
        """In Jupyter (and so under papermill), the message alone: one line instead of a traceback."""
        return [f"FragilityError: {self}"]


def report(err: FragilityError, prog: str) -> int:
    """Print `<prog>: error: <message>` on stderr, as argparse does for usage errors; return its exit status, 2."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2
