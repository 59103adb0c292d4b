"""How wide a run's status is drawn: the one rule that picks a layout from a width.

``fedseg status``, ``fedseg status --follow`` and the federation's live table
(``federation.commands.watch.live_table``) draw through :class:`Fitted`, which picks the
layout when rich draws it, from the width it is given (a terminal, ``COLUMNS``, or the 80
columns rich takes when the output is piped), so a terminal resized under ``--follow``
redraws in the layout that fits:

* ``wide`` (120 columns and more): every column, one per number;
* ``compact`` (60 to 119): one narrow table, the scores of the regions (or modalities) in one
  cell, alarms as short kinds (:func:`short_kind`), the site names never cut;
* ``lines`` (under 60): one line per site.

A table whose every column is ``no_wrap`` must fit at its natural width: when it does not
(long site names), the next narrower layout is drawn instead, so a cell is never cut to
"…". A forced layout (``--wide``, ``--lines``) is drawn as asked, on a console made wide
enough for it (:meth:`Fitted.console_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table

from fedseg.run_folder import AlarmKind


class Layout(StrEnum):
    """How much a status view shows per site (widest first)."""

    WIDE = "wide"
    COMPACT = "compact"
    LINES = "lines"


#: the narrowest width each layout is drawn at without being asked for
WIDE_MIN_COLUMNS = 120
COMPACT_MIN_COLUMNS = 60

_ORDER = (Layout.WIDE, Layout.COMPACT, Layout.LINES)
_UNBOUNDED = 100_000  # columns: room to measure a table's natural width


def layout_for(width: int) -> Layout:
    """The layout for ``width`` columns: wide from 120, compact from 60, else lines."""
    if width >= WIDE_MIN_COLUMNS:
        return Layout.WIDE
    return Layout.COMPACT if width >= COMPACT_MIN_COLUMNS else Layout.LINES


def fits(console: Console, options: ConsoleOptions, parts: Iterable[RenderableType]) -> bool:
    """Whether every table of ``parts`` whose columns are all ``no_wrap`` fits at its
    natural width (the others wrap their cells by design)."""
    return natural_width(console, parts) <= options.max_width


def natural_width(console: Console, parts: Iterable[RenderableType]) -> int:
    """The columns the widest no-wrap table of ``parts`` needs (0: none)."""
    options = console.options.update_width(_UNBOUNDED)
    rigid = [p for p in parts if isinstance(p, Table) and all(c.no_wrap for c in p.columns)]
    return max((Measurement.get(console, options, t).maximum for t in rigid), default=0)


class Fitted:
    """A rich renderable that draws ``build(layout)`` in the layout for the width it gets
    (:func:`layout_for`, narrower while a no-wrap table does not fit), or in ``layout``
    when one is given."""

    def __init__(
        self, build: Callable[[Layout], Sequence[RenderableType]], layout: Layout | None = None
    ) -> None:
        self.build = build
        self.layout = layout

    def parts(self, console: Console, options: ConsoleOptions) -> Sequence[RenderableType]:
        """What is drawn at ``options.max_width``."""
        if self.layout is not None:
            return self.build(self.layout)
        start = _ORDER.index(layout_for(options.max_width))
        for lay in _ORDER[start:]:
            parts = self.build(lay)
            if lay == Layout.LINES or fits(console, options, parts):
                return parts
        raise AssertionError("unreachable: the lines layout always fits")

    def console_for(self, console: Console) -> Console:
        """``console``, or a wider one where a forced layout needs more columns (``--wide``
        in a narrow terminal or a pipe: long lines rather than cut cells)."""
        if self.layout is None:
            return console
        need = natural_width(console, self.build(self.layout))
        return console if need <= console.width else Console(width=need)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.parts(console, options)


def narrow_table(title: str | None, columns: Sequence[tuple[str, bool]]) -> Table:
    """A compact table: no vertical rules, every column ``no_wrap`` (``(header, right
    aligned)`` per column)."""
    t = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for name, right in columns:
        t.add_column(name, justify="right" if right else "left", no_wrap=True)
    return t


#: an alarm kind in a narrow cell (the full kind is listed under the table)
SHORT_KINDS: dict[str, str] = {
    AlarmKind.LABELS_DISAGREE: "labels!",
    AlarmKind.BELOW_FEDERATION: "below",
    AlarmKind.UPDATE_OUTLIER: "outlier",
    AlarmKind.STALLED: "stalled",
}

#: a site's observations (level observation: shown, never notified) in a narrow cell
OBSERVATION_MARK = "obs"


def short_kind(kind: str) -> str:
    """``labels!`` for ``labels_disagree``, ...; an unknown kind as it is."""
    return SHORT_KINDS.get(kind, kind)


def short_alarms(kinds: Sequence[str], observations: Sequence[str] = ()) -> str:
    """``labels! below``, ``obs`` or ``-``: a site's alarm kinds in one narrow cell."""
    words = [short_kind(k) for k in dict.fromkeys(kinds)]
    if observations:
        words.append(OBSERVATION_MARK)
    return " ".join(words) or "-"


def number(v: float | int | None, fmt: str = ".3f") -> str:
    """``0.766``, or ``-`` for a missing or NaN value."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, fmt)


def scores_cell(scores: dict[str, float], groups: Sequence[str], fmt: str = ".2f") -> str:
    """The groups' scores in one cell, ``0.94 0.72 0.64`` (``-`` for a missing one), each
    under its name in :func:`scores_header`."""
    cells = (number(scores.get(g), fmt).ljust(_cell_width(g, fmt)) for g in groups)
    return " ".join(cells).rstrip()


def _cell_width(group: str, fmt: str) -> int:
    return max(len(group), len(format(0.5, fmt)))


def scores_header(groups: Sequence[str], fmt: str = ".2f") -> str:
    """The header over :func:`scores_cell`, each name above its value: ``ET   TC   WT``."""
    return " ".join(g.ljust(_cell_width(g, fmt)) for g in groups).rstrip()
