"""Aligned plain-text tables, as `inspect`, `eval` and `bench --profile` print them."""

from __future__ import annotations

from collections.abc import Container, Sequence


def aligned(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Container[int], rule: bool = True) -> list[str]:
    """The header line, a rule of dashes under it (when `rule`), then the rows: columns
    two spaces apart, as wide as their widest cell, the columns in `right` aligned
    right (numbers), trailing spaces dropped."""
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return [render(headers), *([render(["-" * width for width in widths])] if rule else []), *(render(row) for row in rows)]
