"""Bad input as a run's failure description: the library's one-line error, not a stack trace,
and a line saying which steps of the run will not run because of it."""

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
    failure description (and no retries: the same input fails the same way), after logging
    which assets of this run are skipped because of it."""

    @functools.wraps(fn)
    def wrapper(context: dg.AssetExecutionContext, *args, **kwargs):
        try:
            return fn(context, *args, **kwargs)
        except BUGS:
            raise
        except USER_ERRORS as err:
            line = one_line(err)
            skipped = downstream_in_run(context)
            if skipped:
                context.log.error(
                    "%s failed, so %s will not run%s: %s",
                    context.asset_key.to_user_string(),
                    ", ".join(skipped),
                    f" for {context.partition_key}" if context.has_partition_key else "",
                    line,
                )
            raise dg.Failure(description=line, allow_retries=False) from err

    return wrapper  # type: ignore[return-value]


def one_line(err: BaseException) -> str:
    """An error's first line, or its type's name when it has no message."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def downstream_in_run(context: dg.AssetExecutionContext) -> list[str]:
    """The assets this run would materialize after the current one (directly or not), sorted."""
    layer = context.job_def.asset_layer
    selected = layer.selected_asset_keys
    found, todo = set(), [context.asset_key]
    while todo:
        for child in layer.asset_graph.get(todo.pop()).child_keys:
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(key.to_user_string() for key in found & selected)
