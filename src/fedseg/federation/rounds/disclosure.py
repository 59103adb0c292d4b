"""What a site lets leave it besides weights and case counts, engine-free.

Summaries: a mean over one case is that patient's value, and mean and std over two give
both values. A site sends a summary (and its training loss) only when it was computed from
at least ``floor`` cases; the floor is the larger of the plan's
``privacy.min_summary_cases`` (it travels in the task) and the site's own
(``fedseg site start --min-summary-cases``, default ``MIN_SUMMARY_CASES``), so a plan can
raise a site's floor but never lower it. Below it the site only says that it validated.

Errors: an exception's text can hold the site's paths and case ids (a truncated NIfTI
names its file). What leaves the site is a category (``ErrorCategory``) and a line built
from the category, the exception's type name and, for a ``SiteError``, its public text
(written by fedseg, naming no path, case or value); ``scrub`` then masks the site's known
paths and case ids and any absolute path left, as a second guard. The full text goes to
the site's own log.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from enum import StrEnum

from fedseg.errors import DataError, FedsegError
from fedseg.model.summary import MIN_SUMMARY_CASES, Summary

__all__ = [
    "MIN_SUMMARY_CASES", "ErrorCategory", "SiteError", "categorize", "public_error",
    "releasable", "scrub", "summary_floor",
]  # fmt: skip


def summary_floor(plan_min: int, site_min: int) -> int:
    """The floor a site applies: the plan may raise the site's own floor, never lower it."""
    return max(int(plan_min), int(site_min), 1)


def releasable(
    summaries: dict[str, dict[str, Summary]], floor: int
) -> dict[str, dict[str, Summary]]:
    """The summaries computed from at least ``floor`` cases (a metric undefined for some
    cases, e.g. HD95 of an empty prediction, has a smaller n than its region's Dice)."""
    out: dict[str, dict[str, Summary]] = {}
    for region, by_metric in summaries.items():
        kept = {m: s for m, s in by_metric.items() if s.n >= floor}
        if kept:
            out[region] = kept
    return out


class ErrorCategory(StrEnum):
    """Where a site's task failed, as the coordinator sees it."""

    DATA = "data"  # the site's data folder, split or a case file
    TRAINING = "training"
    VALIDATION = "validation"
    RESOURCES = "resources"  # memory or disk
    PRIVACY = "privacy"  # the plan's update protection: a protocol step or the DP budget
    INTERNAL = "internal"  # the task itself (decoding, recipe) or anything else


_CATEGORY_TEXT = {
    ErrorCategory.DATA: "the site's data could not be read",
    ErrorCategory.TRAINING: "local training failed",
    ErrorCategory.VALIDATION: "validation failed",
    ErrorCategory.RESOURCES: "the site ran out of memory or disk space",
    ErrorCategory.PRIVACY: "the site could not protect its update as the plan asks",
    ErrorCategory.INTERNAL: "the site could not carry out the task",
}

_RESOURCE_ERRNOS = {errno.ENOSPC, errno.ENOMEM, errno.EDQUOT}


class SiteError(FedsegError):
    """A failure at a site with a ``public`` text that may leave it (fixed wording: no
    path, case id or value) besides the full message, which stays in the site's log."""

    def __init__(self, category: ErrorCategory, public: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.public = public


def categorize(exc: BaseException, phase: ErrorCategory) -> ErrorCategory:
    """The category of ``exc`` raised in ``phase``: a ``SiteError``'s own, ``data`` for an
    unreadable case, ``resources`` for memory or disk exhaustion, else the phase."""
    if isinstance(exc, SiteError):
        return exc.category
    if isinstance(exc, DataError):
        return ErrorCategory.DATA
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return ErrorCategory.RESOURCES
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return ErrorCategory.RESOURCES
    return phase


_ABS_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"<>:,;()\[\]]+){2,}[\\/]?")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every ``secrets`` string (paths, case ids; longest first) replaced by
    ``<hidden>`` and every absolute path left by ``<path>``."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, "<hidden>")
    return _ABS_PATH.sub("<path>", text)


def public_error(exc: BaseException, phase: ErrorCategory, secrets: Iterable[str] = ()) -> str:
    """The one line that may leave the site: ``category: text (ExceptionType)``, scrubbed.
    Never the exception's message."""
    category = categorize(exc, phase)
    text = exc.public if isinstance(exc, SiteError) else _CATEGORY_TEXT[category]
    line = f"{category}: {text} ({type(exc).__name__}); the site's log has the details"
    return scrub(" ".join(line.split()), secrets)
