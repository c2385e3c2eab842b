"""The report's series table (generic over its columns) and its summary plots.

A column is a :class:`Column`: a key, a title, whether it sorts as numbers or text, and
how to get its value (and optionally its HTML) from a row. The table is plain HTML; the
report's ``report.js`` (shipped in ``viewer-assets/``) makes every ``table.series``
sortable by any column and filterable (words, or ``column:value``). Adding a column (a
review flag, a malignancy probability) is adding a :class:`Column` to the tuple passed
to :func:`render_table`; nothing else changes.

The plots are inline SVG drawn here (a histogram is a few rectangles: no plotting
library, no script, nothing to fetch), so ``index.html`` stays one self-contained file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Column", "histogram_svg", "render_table"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One column of the series table.

    Attributes
    ----------
    key
        Name used in filters (``key:value``) and in ``data-key``.
    title
        Header text.
    kind
        ``"number"`` sorts numerically (empty cells first), ``"text"`` alphabetically.
    value
        The cell's value from a row (``None``: empty); shown formatted, and used for
        sorting and filtering.
    digits
        Decimals shown for float values.
    cell
        Optional HTML of the cell (already escaped), e.g. links; the sort value stays
        ``value``.
    """

    key: str
    title: str
    kind: Literal["number", "text"]
    value: Callable[[Row], Any]
    digits: int = 2
    cell: Callable[[Row], str] | None = None

    def text(self, row: Row) -> str:
        """Format the cell's value (``""`` for ``None``, ``"yes"`` for ``True``)."""
        value = self.value(row)
        if value is None or value is False:
            return ""
        if value is True:
            return "yes"
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return str(value)


def render_table(rows: Sequence[Row], columns: Sequence[Column], *, table_id: str) -> str:
    """Return the HTML of a filter box and a sortable table of ``rows``.

    Parameters
    ----------
    rows
        One mapping per series.
    columns
        The columns, in order.
    table_id
        The table's ``id`` (unique in the page).

    Returns
    -------
    str
        ``<p>`` with the filter input and row count, then ``<table class="series">``.
    """
    esc = html.escape
    head = "".join(
        f"<th data-key='{esc(c.key)}' data-kind='{c.kind}' title='click to sort'>"
        f"{esc(c.title)}</th>"
        for c in columns
    )
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = column.value(row)
            sort_value = "" if value is None else str(value)
            shown = column.cell(row) if column.cell else esc(column.text(row))
            cells.append(f"<td data-value='{esc(sort_value)}'>{shown}</td>")
        status = esc(str(row.get("status", "")))
        body.append(f"<tr class='{status}'>{''.join(cells)}</tr>")
    return (
        f"<p class='filter'><input class='filter' data-table='{esc(table_id)}' type='search' "
        "placeholder='filter: words or column:value, e.g. status:done' size='40'> "
        f"<span data-count-for='{esc(table_id)}'>{len(rows)} series</span></p>"
        f"<table class='series' id='{esc(table_id)}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def histogram_svg(
    values: Sequence[float],
    *,
    title: str,
    unit: str,
    bins: int = 12,
    log: bool = False,
    width: int = 420,
    height: int = 180,
) -> str:
    """Return an inline SVG histogram of ``values``.

    Parameters
    ----------
    values
        The numbers (non-finite ones, and non-positive ones on a log axis, are left out).
    title, unit
        Caption and axis unit.
    bins
        Number of bars.
    log
        Bins evenly spaced on a log10 axis (lesion volumes span decades).
    width, height
        Size in pixels.

    Returns
    -------
    str
        ``<figure>`` holding the SVG and its caption; a note when there is nothing to plot.
    """
    esc = html.escape
    data = [float(v) for v in values if math.isfinite(float(v)) and (not log or float(v) > 0)]
    caption = f"<figcaption>{esc(title)} (n = {len(data)})</figcaption>"
    if not data:
        return f"<figure class='plot'>{caption}<p>nothing to plot yet</p></figure>"
    axis = [math.log10(v) for v in data] if log else data
    lo, hi = min(axis), max(axis)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * bins
    for v in axis:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    pad_l, pad_b, pad_t = 34, 34, 8
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    top = max(counts)
    bar_w = plot_w / bins
    bars = []
    for i, n in enumerate(counts):
        h = plot_h * n / top
        x = pad_l + i * bar_w
        left = lo + (hi - lo) * i / bins
        right = lo + (hi - lo) * (i + 1) / bins
        edges = (10**left, 10**right) if log else (left, right)
        bars.append(
            f"<rect x='{x + 1:.1f}' y='{pad_t + plot_h - h:.1f}' width='{bar_w - 2:.1f}' "
            f"height='{h:.1f}' fill='#4a7ab5'><title>{n} between {edges[0]:.3g} and "
            f"{edges[1]:.3g} {esc(unit)}</title></rect>"
        )
    first, last = (10**lo, 10**hi) if log else (lo, hi)
    base = pad_t + plot_h
    labels = (
        f"<text x='{pad_l}' y='{base + 14}' font-size='11'>{first:.3g}</text>"
        f"<text x='{pad_l + plot_w}' y='{base + 14}' font-size='11' text-anchor='end'>"
        f"{last:.3g}</text>"
        f"<text x='{pad_l + plot_w / 2}' y='{base + 28}' font-size='11' text-anchor='middle'>"
        f"{esc(unit)}{' (log scale)' if log else ''}</text>"
        f"<text x='{pad_l - 4}' y='{pad_t + 10}' font-size='11' text-anchor='end'>{top}</text>"
        f"<text x='{pad_l - 4}' y='{base}' font-size='11' text-anchor='end'>0</text>"
    )
    frame = (
        f"<line x1='{pad_l}' y1='{base}' x2='{pad_l + plot_w}' y2='{base}' stroke='#444'/>"
        f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{base}' stroke='#444'/>"
    )
    svg = (
        f"<svg width='{width}' height='{height}' "
        f"role='img' aria-label='{esc(title)}'>{''.join(bars)}{frame}{labels}</svg>"
    )
    return f"<figure class='plot'>{svg}{caption}</figure>"
