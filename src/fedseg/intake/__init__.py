"""Clinic intake: DICOM to de-identified NIfTI, the harmonized BraTS preprocessing, PACS access,
and results back to the PACS as DICOM SEG (through the site's private ``linkage``).

Imports only ``fedseg.data`` and ``fedseg.errors``; the field libraries (pydicom, SimpleITK,
pynetdicom, highdicom) are the ``intake`` extra and are imported by the modules that need them.
"""

from __future__ import annotations


def require_intake() -> None:
    """A one-line error instead of an ImportError when the intake extra is not installed."""
    import importlib.util

    from fedseg.errors import FedsegError

    wanted = ("SimpleITK", "pydicom", "pynetdicom", "highdicom")
    missing = [m for m in wanted if not importlib.util.find_spec(m)]
    if missing:
        raise FedsegError(f"fedseg intake needs {', '.join(missing)}: pip install 'fedseg[intake]'")
