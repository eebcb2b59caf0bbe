"""``FittedTable``: a table for the terminal that fits the console's width without cutting a cell.

Rich shortens what does not fit (``stude…``); a FittedTable never does. Names and numbers are kept whole; only
the columns declared ``wrap`` (prose: descriptions, lists) wrap, at spaces. The first layout that fits is used:

1. one table, every column side by side;
2. one row per two lines: the first cell (the row's name) on a line of its own, the other cells below it,
   aligned under the other columns' headers::

        model        teachers       budget     time   status
        ───────────────────────────────────────────────────
      student-mkd-adaptive-k6-pseudo-seed0
        unet-small   k6 ×4      1500 steps   ~5 min   new

3. one block per row: its first cell, then ``header: value`` pairs, as many to a line as fit (a longer
   pair wraps at spaces).

Columns are added like those of a ``rich.table.Table``, so a table grows a column without changing its layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.padding import Padding
from rich.style import StyleType
from rich.table import Table
from rich.text import Text

COLUMN_GAP = 3
"""Characters between two columns (padding, rule, padding); the table has no outer border or padding."""
INDENT = 2
"""Indent of the cells under a row's name (layouts 2 and 3)."""
PAIR_GAP = "  "


@dataclass(frozen=True)
class Column:
    """A column: its header, alignment and whether its cells may wrap at spaces (else they are kept whole)."""

    header: str
    justify: JustifyMethod = "left"
    wrap: bool = False


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    style: StyleType | None = None


class FittedTable:
    """A table that fits the console's width: columns side by side, or each row's name above its other cells,
    or one block of ``header: value`` pairs per row (see the module docstring)."""

    def __init__(self, title: str | None = None, caption: str | None = None) -> None:
        self.title = title
        self.caption = caption
        self.columns: list[Column] = []
        self.rows: list[Row] = []

    def add_column(self, header: str, justify: JustifyMethod = "left", wrap: bool = False) -> None:
        self.columns.append(Column(header, justify, wrap))

    def add_row(self, *cells: str, style: StyleType | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(Row(tuple(cells), style))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        widths = self.column_widths(range(len(self.columns)), width)
        if widths is not None:
            yield self.table(self.columns, self.rows, widths, self.title, self.caption)
            return
        widths = self.column_widths(range(1, len(self.columns)), width - INDENT)
        yield from self.named_rows(widths) if widths is not None else self.blocks(width)

    def column_widths(self, indices: Sequence[int], width: int) -> list[int] | None:
        """The content width of each of the columns ``indices`` when they fit side by side in ``width`` with
        whole names and numbers, else None.

        A column needs at least its longest header word and its longest cell (longest word if it wraps); the
        room left is shared in proportion to how much more each column could use.
        """
        least, most = [], []
        for index in indices:
            column = self.columns[index]
            cells = [row.cells[index] for row in self.rows]
            least.append(max([_longest_word(column.header), *map(_longest_word if column.wrap else _longest_line, cells)]))
            most.append(max(map(_longest_line, [column.header, *cells])))
        spare = width - COLUMN_GAP * (len(least) - 1) - sum(least)
        wanted = sum(most) - sum(least)
        if spare < 0:
            return None
        if spare >= wanted:
            return most
        return [low + (high - low) * spare // wanted for low, high in zip(least, most)]

    @staticmethod
    def table(
        columns: Sequence[Column],
        rows: Sequence[Row],
        widths: Sequence[int],
        title: str | None = None,
        caption: str | None = None,
        show_header: bool = True,
    ) -> Table:
        """A rich table of ``rows`` with the content ``widths`` given to ``columns``."""
        table = Table(title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                      pad_edge=False, show_header=show_header)
        for column, width in zip(columns, widths):
            table.add_column(column.header, justify=column.justify, width=width, overflow="fold")
        for row in rows:
            table.add_row(*map(Text, row.cells), style=row.style)
        return table

    def named_rows(self, widths: Sequence[int]) -> RenderResult:
        """Layout 2: the headers of the columns after the first, then each row's name above its other cells."""
        yield from self._title()
        yield Padding(self.table(self.columns[1:], [], widths), (0, 0, 0, INDENT))
        for row in self.rows:
            yield Text(row.cells[0], style=row.style or "bold", overflow="fold")
            rest = Row(row.cells[1:], row.style)
            yield Padding(self.table(self.columns[1:], [rest], widths, show_header=False), (0, 0, 0, INDENT))
        yield from self._caption()

    def blocks(self, width: int) -> RenderResult:
        """Layout 3: each row's name, then its ``header: value`` pairs packed into lines of at most ``width``."""
        yield from self._title()
        for row in self.rows:
            yield Text(row.cells[0], style=row.style or "bold", overflow="fold")
            pairs = [f"{column.header}: {cell}" for column, cell in zip(self.columns[1:], row.cells[1:])]
            for line in _pack(pairs, width - INDENT):
                yield Padding(Text(line, style=row.style or "", overflow="fold"), (0, 0, 0, INDENT))
        yield from self._caption()

    def _title(self) -> RenderResult:
        if self.title:
            yield Text(self.title, style="table.title", justify="center")

    def _caption(self) -> RenderResult:
        if self.caption:
            yield Text(self.caption, style="table.caption")


def _longest_word(text: str) -> int:
    return max(map(cell_len, text.split()), default=0)


def _longest_line(text: str) -> int:
    return max(map(cell_len, text.splitlines()), default=0)


def _pack(pairs: list[str], width: int) -> list[str]:
    """``pairs`` joined by :data:`PAIR_GAP` into as few lines of at most ``width`` as their order allows."""
    lines: list[str] = []
    for pair in pairs:
        if lines and cell_len(lines[-1] + PAIR_GAP + pair) <= width:
            lines[-1] += PAIR_GAP + pair
        else:
            lines.append(pair)
    return lines


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(line) + " |" for line in (header, ["---"] * len(header), *rows)]
