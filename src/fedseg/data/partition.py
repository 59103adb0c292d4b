"""A FeTS-challenge partition file (case -> institution) and the site folders it lays out.

The FeTS challenge split its data into institutions with a CSV of two columns,
``Partition_ID,Subject_ID`` (``partitioning_1.csv``: 23 institutions, ``partitioning_2.csv``:
33). ``InstitutionName`` is taken for the partition column too. One reader serves two uses:

- ``read_partition(csv) -> {"inst<ID>": [subject ids in file order]}``, sites ordered by
  their ID (numerically when every ID is a number); ``fedseg data synth --partition`` takes
  the sites, their sizes and the subject ids (as case names) from it;
- ``link_partition(csv, cases, out)`` (``fedseg data partition``) lays out REAL cases, one
  folder per subject id under ``cases``, into ``out/inst<ID>/<subject>`` symlinks (never
  copies), so that each ``out/inst<ID>`` is a site folder ``fedseg data check`` reads.

Every problem is one ``FedsegError`` line naming the file (and line) and the fix.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from fedseg.errors import FedsegError

#: Accepted names of the partition column (the challenge's CSV, and its README's prose).
PARTITION_COLUMNS = ("Partition_ID", "InstitutionName")
SUBJECT_COLUMN = "Subject_ID"
#: Prefix of the site folder of a partition ID.
SITE_PREFIX = "inst"
# A subject id or partition id becomes a folder name: no path separators, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_partition(csv_path: Path) -> dict[str, list[str]]:
    """Site name (``inst<ID>``) -> its subject ids, from a challenge partition CSV."""
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise FedsegError(
            f"{path}: cannot read the partition file ({reason}); give a CSV with the "
            f"columns Partition_ID,Subject_ID"
        ) from None
    rows = list(csv.reader(text.splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    part_col = next((c for c in PARTITION_COLUMNS if c in header), None)
    if part_col is None or SUBJECT_COLUMN not in header:
        raise FedsegError(
            f"{path}: unknown header {','.join(header) or '(empty file)'}; a partition file "
            f"has the columns Partition_ID,Subject_ID (InstitutionName is taken for Partition_ID)"
        )
    pi, si = header.index(part_col), header.index(SUBJECT_COLUMN)
    sites: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(pi, si):
            raise FedsegError(f"{path}:{line}: {len(row)} column(s); give {part_col},Subject_ID")
        part, subject = row[pi].strip(), row[si].strip()
        if not part or not subject:
            empty = "Subject_ID" if part else part_col
            raise FedsegError(f"{path}:{line}: empty {empty}; every line names a case and its "
                              f"institution")  # fmt: skip
        for what, value in (("partition", part), ("subject", subject)):
            if not _NAME.fullmatch(value):
                raise FedsegError(
                    f"{path}:{line}: {what} id {value!r} is not a plain name (letters, digits, "
                    f"._-; it becomes a folder name); fix that line"
                )
        if subject in seen:
            raise FedsegError(
                f"{path}:{line}: subject {subject} is listed twice (first on line "
                f"{seen[subject]}); a case belongs to one institution, remove one line"
            )
        seen[subject] = line
        sites.setdefault(part, []).append(subject)
    if not sites:
        raise FedsegError(f"{path}: no subject listed (empty partition); add Partition_ID,"
                          f"Subject_ID lines")  # fmt: skip
    numeric = all(p.isdigit() for p in sites)
    order = sorted(sites, key=lambda p: (int(p), p) if numeric else (0, p))
    return {f"{SITE_PREFIX}{p}": sites[p] for p in order}


def link_partition(csv_path: Path, cases_dir: Path, out: Path) -> dict[str, list[Path]]:
    """Lay out the cases of ``cases_dir`` (one folder per subject id) into
    ``out/<site>/<subject>`` symlinks following the partition; returns site -> links.

    Refuses a non-empty ``out`` and a subject without a case folder, before writing anything.
    """
    sites = read_partition(csv_path)
    cases_dir, out = Path(cases_dir), Path(out)
    if not cases_dir.is_dir():
        raise FedsegError(f"{cases_dir}: not a folder; give the folder holding one folder per "
                          f"subject id")  # fmt: skip
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FedsegError(f"{out} is not an empty folder; give a new or empty output folder")
    missing = [s for subjects in sites.values() for s in subjects if not (cases_dir / s).is_dir()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FedsegError(
            f"subject {missing[0]}{more} of {csv_path} has no case folder in {cases_dir}; "
            f"add {cases_dir / missing[0]} or remove its line from the CSV"
        )
    source = cases_dir.resolve()
    result: dict[str, list[Path]] = {}
    for site, subjects in sites.items():
        (out / site).mkdir(parents=True, exist_ok=True)
        links = []
        for subject in subjects:
            link = out / site / subject
            link.symlink_to(source / subject, target_is_directory=True)
            links.append(link)
        result[site] = links
    return result
