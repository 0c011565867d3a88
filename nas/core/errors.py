"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations


class NasUserError(Exception):
    """A mistake in user input: a bad flag, file, name or value.

    The message is one line that names the bad value and what is allowed. The CLI prints it without a
    traceback and exits with code 2. Internal bugs must not use this class. It is deliberately not a
    ValueError: library code that catches ValueError (numpy, json, our own parsers) must not swallow a user
    error, and the CLI must not turn a ValueError from a bug into a user error.
    """


class ArchConfigError(NasUserError):
    """An ArchConfig field holds a value no Llama-family model can have."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"ArchConfig.{field}: {message}")
