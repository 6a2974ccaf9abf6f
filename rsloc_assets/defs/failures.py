"""Bad input as a run's failure description: the library's one-line error, not a stack trace."""

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

F = TypeVar("F", bound=Callable)

# What the library raises for input a user can fix (a bad file, a name that cannot name a file,
# a missing upstream artefact: LookupError); anything else, KeyError and IndexError included, is
# a bug and keeps Dagster's usual error.
USER_ERRORS = (ValueError, FileNotFoundError, LookupError)
BUGS = (KeyError, IndexError)


def fails_in_one_line(fn: F) -> F:
    """Wrap an asset body so that a user error fails the step with that error's one line as the
    failure description (and no retries: the same input fails the same way)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BUGS:
            raise
        except USER_ERRORS as err:
            line = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise dg.Failure(description=line, allow_retries=False) from err

    return wrapper  # type: ignore[return-value]
