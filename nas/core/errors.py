"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations

import re

# C0 and C1 control characters and DEL: a user value holding one (a newline, an ANSI escape) must not break the
# one-line promise or repaint the user's terminal when an error line quotes it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """`text` with every control character written as its escape (`\\n`, `\\x1b`), as repr() writes it."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class NasUserError(Exception):
    """A mistake in user input: a bad flag, file, name or value.

    The message is one line that names the bad value and what is allowed. The CLI prints it without a
    traceback and exits with code 2. Internal bugs must not use this class. It is deliberately not a
    ValueError: library code that catches ValueError (numpy, json, our own parsers) must not swallow a user
    error, and the CLI must not turn a ValueError from a bug into a user error.

    Control characters in the message (from a user value quoted without repr: a file name, a study name) are
    escaped here, once for every message, so the line stays one line and prints as text.
    """

    def __init__(self, message: str = "", *args):
        super().__init__(one_line(str(message)), *args)


class ArchConfigError(NasUserError):
    """An ArchConfig field holds a value no Llama-family model can have."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"ArchConfig.{field}: {message}")
