"""The project's error types: every mistake a user can make ends in one of these.

The CLI prints the message (no traceback) and exits with ``exit_code``: 2 for a user error
(bad input, missing file, mismatched checkpoint), 1 for a failure during a run.
"""


class MRDError(Exception):
    """A user error: the message says what is wrong and what to do about it."""

    exit_code = 2


class MRDRunError(MRDError):
    """A failure while a run was under way (e.g. a non-finite loss)."""

    exit_code = 1
