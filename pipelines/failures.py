"""How a step fails in Dagster: one message, and a retry only when retrying can help.

Every asset, check and op runs its work inside :func:`as_failure`: Projectionist's own errors and
the errors of DuckDB and psycopg (classified by :mod:`eventstore.failures`) become a
:class:`dagster.Failure` whose description is the one-line reason, with ``allow_retries`` set for
transient errors only. :data:`RETRY_POLICY` then retries those with exponential backoff and jitter
(a server restarting, a busy catalog), while a wrong setting fails the run at once.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
import psycopg

from eventstore.errors import ProjectionistError
from eventstore.failures import translate

__all__ = ["RETRY_POLICY", "as_failure"]

#: Transient failures are retried 3 times, 10 s, 20 s then 40 s later (each ±50 %).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextmanager
def as_failure(what: str) -> Iterator[None]:
    """Run a step's work; a failure is reported as ``what`` failed and why, retried only when transient."""
    try:
        yield
    except ProjectionistError as exc:
        raise dg.Failure(description=str(exc), allow_retries=exc.retryable) from exc
    except (duckdb.Error, psycopg.Error) as exc:
        error = translate(exc, what, wait="Retrying with backoff.")
        raise dg.Failure(description=str(error), allow_retries=error.retryable) from exc
