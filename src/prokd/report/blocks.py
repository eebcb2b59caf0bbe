"""Content blocks of the report, each rendered as HTML (escaped; figures as base64 PNG data URIs, each a link
to its full-size ``figures/<name>.png``) and as Markdown (figures as links to ``figures/<name>.png``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

__all__ = ["Block", "Bullets", "Facts", "Heading", "Paragraph", "Plot", "Table"]


@dataclass
class Heading:
    text: str
    level: int = 2

    def html(self) -> str:
        return f"<h{self.level}>{escape(self.text)}</h{self.level}>"

    def markdown(self) -> str:
        return f"{'#' * self.level} {self.text}"


@dataclass
class Paragraph:
    text: str

    def html(self) -> str:
        return f"<p>{escape(self.text)}</p>"

    def markdown(self) -> str:
        return self.text


@dataclass
class Bullets:
    """A list of short statements (e.g. the verdict)."""

    items: list[str]

    def html(self) -> str:
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in self.items) + "</ul>"

    def markdown(self) -> str:
        return "\n".join(f"- {item}" for item in self.items)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def html(self) -> str:
        head = "".join(f"<th>{escape(cell)}</th>" for cell in self.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in self.rows)
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'

    def markdown(self) -> str:
        lines = [self.header, ["---"] * len(self.header), *self.rows]
        return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


@dataclass
class Facts:
    """Named values (e.g. the run environment): a two-column table in HTML, a bullet list in Markdown."""

    items: list[tuple[str, str]]

    def html(self) -> str:
        rows = "".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in self.items)
        return f'<table class="facts"><tbody>{rows}</tbody></table>'

    def markdown(self) -> str:
        return "\n".join(f"- **{name}**: {value}" for name, value in self.items)


@dataclass
class Plot:
    """A figure: ``name`` (its file is ``figures/<name>.png``), the PNG bytes and a caption. In HTML the image
    links to that file, which shows it at full size."""

    name: str
    png: bytes
    caption: str

    @property
    def path(self) -> str:
        return f"figures/{self.name}.png"

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><a href="{escape(self.path)}" title="open at full size">'
            f'<img src="data:image/png;base64,{data}" alt="{escape(self.name)}"></a>'
            f"<figcaption>{escape(self.caption)}</figcaption></figure>"
        )

    def markdown(self) -> str:
        return f"![{self.name}]({self.path})\n\n*{self.caption}*"


Block = Heading | Paragraph | Bullets | Table | Facts | Plot
