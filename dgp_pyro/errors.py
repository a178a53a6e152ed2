"""User-facing errors.

Every problem a user can fix (a malformed label file, a camera count that does not match the
views, a corrupt checkpoint, ...) is raised as a :class:`DGPError` that names the file and the
problem, and says how to fix it where we know. The CLI prints these as one line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class DGPError(Exception):
    """A problem with the user's input, reported as one clear message.

    Args:
        problem: what is wrong, in the user's terms.
        path: the file or folder the problem is in, if any.
        hint: how to fix it, if known.
    """

    def __init__(self, problem: str, path: str | Path | None = None, hint: str | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        self.hint = hint
        message = problem if self.path is None else f"{self.path}: {problem}"
        if hint:
            message = f"{message} ({hint})"
        super().__init__(message)
