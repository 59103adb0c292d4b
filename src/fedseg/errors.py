"""The one exception type users see: a message that says what is wrong and how to fix it."""


class FedsegError(Exception):
    """A user-facing error. The CLI prints its message as one line, with no traceback.

    The message must name what is wrong and what to do about it, e.g.
    ``"no cases found in /data/site1: expected BraTS folders (<case>/<case>_t1.nii.gz ...)"``.
    """


class DataError(FedsegError):
    """A data file cannot be read or does not hold what it should (a truncated NIfTI, a
    missing channel or label map). A site reports it in the ``data`` category."""


class PlanError(FedsegError):
    """The plan cannot run as written (e.g. an unknown strategy): running it again fails the
    same way until the plan is changed."""
