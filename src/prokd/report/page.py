"""The report page: the content blocks of :mod:`prokd.report.sections` rendered twice, as one self-contained
HTML file (CSS inline, figures as base64 PNG data URIs, no external resources) and as Markdown referencing
the PNG files.

    DIR/report/index.html  report.md  figures/<name>.png

The report is derived from the experiment folder only and is regenerated in place by :func:`write_report`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from prokd.report.blocks import Block, Plot
from prokd.report.browser import IMAGE_CHECK_SCRIPT
from prokd.report.folder import Experiment
from prokd.report.sections import report_blocks

__all__ = ["to_html", "to_markdown", "write_report"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d1d1f; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; } table.facts td { text-align: left; white-space: normal; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 1100px; margin-top: 6px; }
"""


def to_html(title: str, blocks: list[Block]) -> str:
    """A complete, self-contained HTML page, with the image check of :mod:`prokd.report.browser`."""
    body = "\n".join(block.html() for block in blocks)
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n{IMAGE_CHECK_SCRIPT}\n</body>\n</html>\n"
    )


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(block.markdown() for block in blocks) + "\n"


def write_report(directory: str | Path) -> Path:
    """Write ``DIR/report/`` (index.html, report.md, figures/*.png) for the experiment folder ``directory``;
    returns the path of index.html. A previous report's files are replaced."""
    experiment = Experiment.load(directory)
    title, blocks = report_blocks(experiment)
    out = Path(directory) / "report"
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    for block in blocks:
        if isinstance(block, Plot):
            (out / block.path).write_bytes(block.png)
    (out / "report.md").write_text(to_markdown(blocks))
    index = out / "index.html"
    index.write_text(to_html(title, blocks))
    return index
