"""The machine lock long benchmarks hold during each run, so that others' timing benchmarks interleave with
theirs instead of running on a busy machine."""

from __future__ import annotations

import contextlib
import fcntl


@contextlib.contextmanager
def machine_lock(path: str | None):
    """Hold an exclusive flock on `path` (if given) while the block runs."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
