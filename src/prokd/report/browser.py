"""Checking a report page in a real headless browser (Debian's chromium).

The page carries :data:`IMAGE_CHECK_SCRIPT`: on load it counts the ``<img>`` elements and the broken ones
(not complete, or of natural width 0), the elements wider than their box (a table that would need a
horizontal scroll bar) and the page's height, and writes them into a hidden marker element.
:func:`check_page` dumps the rendered DOM with ``chromium --dump-dom`` at :data:`WIDTH` pixels and reads the
marker, then screenshots the whole page: a window :data:`WIDTH` wide and as tall as the page. Each chromium
call gets a fresh, throw-away profile folder.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHROMIUM", "IMAGE_CHECK_SCRIPT", "BrowserError", "PageCheck", "check_page"]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH = 1400
FIRST_PASS_HEIGHT = 1000
MAX_HEIGHT = 30000  # pixels; a longer page is screenshot down to here
TIMEOUT_SECONDS = 120
MARKER_ID = "prokd-image-check"
IMAGE_CHECK_SCRIPT = f"""<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) {{ return !img.complete || img.naturalWidth === 0; }}).length;
  var boxes = Array.prototype.slice.call(document.querySelectorAll(".scroll, main"));
  var overflowing = boxes.filter(function (box) {{ return box.scrollWidth > box.clientWidth + 1; }}).length;
  var marker = document.createElement("div");
  marker.id = "{MARKER_ID}";
  marker.hidden = true;
  marker.setAttribute("data-images", images.length);
  marker.setAttribute("data-broken", broken);
  marker.setAttribute("data-overflowing", overflowing);
  marker.setAttribute("data-height", Math.ceil(document.documentElement.scrollHeight));
  document.body.appendChild(marker);
}});
</script>"""
_MARKER = re.compile(
    rf'id="{MARKER_ID}"[^>]*?data-images="(\d+)"[^>]*?data-broken="(\d+)"[^>]*?data-overflowing="(\d+)"'
    r'[^>]*?data-height="(\d+)"'
)


class BrowserError(RuntimeError):
    """The headless browser is missing or could not check the page; the message says which and why."""


@dataclass(frozen=True)
class PageCheck:
    """``images`` ``<img>`` elements on the page, ``broken`` of them not rendered, ``overflowing`` boxes wider than
    the page (tables needing a horizontal scroll bar at :data:`WIDTH` pixels), the page's ``height`` in pixels and
    the whole-page ``screenshot``."""

    images: int
    broken: int
    overflowing: int
    height: int
    screenshot: Path


def check_page(html_path: str | Path, screenshot_path: str | Path, chromium: str | Path = CHROMIUM) -> PageCheck:
    """Load ``html_path`` in headless chromium :data:`WIDTH` pixels wide: count its images, the broken ones and
    the boxes wider than the page, and save a screenshot of the whole page (at most :data:`MAX_HEIGHT` tall).

    The page must contain :data:`IMAGE_CHECK_SCRIPT`.

    Raises:
        BrowserError: chromium is not installed, fails, or the page's check script did not run.
    """
    html_path, screenshot_path = Path(html_path).resolve(), Path(screenshot_path).resolve()
    if not Path(chromium).is_file():
        raise BrowserError(f"{chromium}: chromium not found; install it (apt-get install chromium) to check pages")
    if not html_path.is_file():
        raise BrowserError(f"{html_path}: no such page")
    url = html_path.as_uri()
    dom = _run(chromium, ["--dump-dom", f"--window-size={WIDTH},{FIRST_PASS_HEIGHT}", url])
    found = _MARKER.search(dom)
    if found is None:
        raise BrowserError(f"{html_path}: the page's image check did not run (no #{MARKER_ID} in the rendered DOM)")
    screenshot_path.parent.mkdir(parents=True, exist_ok=True)
    screenshot_path.unlink(missing_ok=True)
    images, broken, overflowing, height = (int(value) for value in found.groups())
    window = f"--window-size={WIDTH},{min(max(height, FIRST_PASS_HEIGHT), MAX_HEIGHT)}"
    _run(chromium, [f"--screenshot={screenshot_path}", window, url])
    if not screenshot_path.is_file():
        raise BrowserError(f"{screenshot_path}: chromium wrote no screenshot of {html_path}")
    return PageCheck(images, broken, overflowing, height, screenshot_path)


def _run(chromium: str | Path, arguments: list[str]) -> str:
    """Run chromium with the fixed flags and a fresh profile; its standard output."""
    with tempfile.TemporaryDirectory(prefix="prokd-chromium-") as profile:
        command = [str(chromium), *FLAGS, f"--user-data-dir={profile}", *arguments]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish within {TIMEOUT_SECONDS} s: {' '.join(arguments)}") from None
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise BrowserError(f"chromium failed (exit {done.returncode}): {last[0]}")
    return done.stdout
