"""Command-line entry points: errors as one line, the traceback only with ``--verbose``.

A user who mistypes a flag, points ``--workdir`` at a read-only folder or feeds a malformed file should
read what is wrong and how to fix it, not a 50-line traceback. Every script calls :func:`run` instead of
``absl.app.run``; an error ends the program with ``error: <message>`` on stderr and exit status 1 (2
for a bad flag). ``--verbose`` re-raises it with its traceback, for bug reports.

Example::

    def main(argv): ...
    if __name__ == "__main__":
        cli.run(main)
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags

_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, show the full traceback instead of one line.")


def _text(error: BaseException) -> str:
    arg = error.args[0] if len(error.args) == 1 else None
    if isinstance(arg, BaseException):  # ml_collections: AttributeError(KeyError("'x'\nDid you mean ..."))
        return _text(arg)
    if isinstance(error, KeyError) and isinstance(arg, str):
        return arg  # str() of a KeyError is the repr of its message
    return str(error)


def message(error: BaseException) -> str:
    """One line naming the error: its own text with newlines folded (a KeyError's repr quoting removed)."""
    text = " ".join(part.strip() for part in _text(error).splitlines() if part.strip())
    kind = type(error).__name__
    return f"{kind}: {text}" if text else kind


def _fail(text: str, status: int) -> NoReturn:
    sys.stderr.write(f"error: {text}\n(run again with --verbose for the traceback)\n")
    sys.exit(status)


def _verbose(argv: Sequence[str]) -> bool:
    return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with config-override errors (a misspelt ``--config.x``) as one line."""
    try:
        return flags.FLAGS(list(argv))
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        if _verbose(argv):
            raise
        _fail(f"bad command-line flag: {message(e)}", 2)


def run(main: Callable[[list[str]], object]) -> None:
    """``absl.app.run(main)`` with one-line errors (see the module docstring)."""

    def guarded(argv: list[str]) -> object:
        try:
            return main(argv)
        except app.UsageError:
            raise
        except Exception as e:  # the user sees one line; --verbose shows the traceback
            if _VERBOSE.value:
                raise
            _fail(message(e), 1)

    app.run(guarded, flags_parser=parse_flags)
