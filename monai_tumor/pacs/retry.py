"""Retry a PACS operation with exponential backoff, then fail with a clear :class:`PacsError`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from monai_tumor.errors import PacsError
from monai_tumor.pacs.config import RetryPolicy

__all__ = ["TransientPacsError", "with_retries"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientPacsError(PacsError):
    """A failure worth retrying (connection refused or reset, cut transfer, 503, timeout)."""


def with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; retry it on :class:`TransientPacsError` as ``policy`` says.

    Parameters
    ----------
    operation
        Does the work; raises :class:`TransientPacsError` for failures worth retrying and
        any other :class:`PacsError` for final ones (e.g. 401, 404).
    policy
        Attempts and backoff.
    what
        What is attempted, for messages ("WADO-RS instance 1.2.3 from http://...").
    sleep
        The wait (a parameter so a caller can wait on an event instead).

    Raises
    ------
    PacsError
        The last failure after ``policy.attempts`` tries, saying how often it was tried.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except TransientPacsError as exc:
            if attempt == policy.attempts:
                raise PacsError(
                    f"{what} failed {policy.attempts} times, last: {exc.reason}. Check that "
                    "the server is running and reachable, then rerun: finished work is kept"
                ) from exc
            delay = policy.delay(attempt)
            _log.warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                exc.reason,
                attempt,
                policy.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
