"""Checking a report page in a real headless browser (Debian's chromium).

The page carries :data:`IMAGE_CHECK_SCRIPT`: on load it counts the ``<img>`` elements and the broken ones
(not complete, or of natural width 0) and writes both into a hidden marker element. :func:`check_page` dumps
the rendered DOM with ``chromium --dump-dom`` and reads the marker, then takes a full-window screenshot.
Each chromium call gets a fresh, throw-away profile folder.
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
WINDOW = "1400,3000"
TIMEOUT_SECONDS = 120
MARKER_ID = "prokd-image-check"
IMAGE_CHECK_SCRIPT = f"""<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) {{ return !img.complete || img.naturalWidth === 0; }}).length;
  var marker = document.createElement("div");
  marker.id = "{MARKER_ID}";
  marker.hidden = true;
  marker.setAttribute("data-images", images.length);
  marker.setAttribute("data-broken", broken);
  document.body.appendChild(marker);
}});
</script>"""
_MARKER = re.compile(rf'id="{MARKER_ID}"[^>]*?data-images="(\d+)"[^>]*?data-broken="(\d+)"')


class BrowserError(RuntimeError):
    """The headless browser is missing or could not check the page; the message says which and why."""


@dataclass(frozen=True)
class PageCheck:
    """``images`` ``<img>`` elements on the page, ``broken`` of them not rendered, and the ``screenshot``."""

    images: int
    broken: int
    screenshot: Path


def check_page(html_path: str | Path, screenshot_path: str | Path, chromium: str | Path = CHROMIUM) -> PageCheck:
    """Load ``html_path`` in headless chromium: count its images and the broken ones, save a screenshot.

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
    dom = _run(chromium, ["--dump-dom", url])
    found = _MARKER.search(dom)
    if found is None:
        raise BrowserError(f"{html_path}: the page's image check did not run (no #{MARKER_ID} in the rendered DOM)")
    screenshot_path.parent.mkdir(parents=True, exist_ok=True)
    screenshot_path.unlink(missing_ok=True)
    _run(chromium, [f"--screenshot={screenshot_path}", f"--window-size={WINDOW}", url])
    if not screenshot_path.is_file():
        raise BrowserError(f"{screenshot_path}: chromium wrote no screenshot of {html_path}")
    return PageCheck(int(found.group(1)), int(found.group(2)), screenshot_path)


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
