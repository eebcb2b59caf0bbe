"""The report in a real headless browser (Debian chromium): no broken image, a screenshot; broken images found."""

from __future__ import annotations

import struct

import pytest

from prokd.report.browser import CHROMIUM, IMAGE_CHECK_SCRIPT, BrowserError, check_page

needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"headless browser not installed ({CHROMIUM})")
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", header[16:24])


@needs_chromium
def test_report_renders_without_broken_images(report_index, figure_count, tmp_path):
    check = check_page(report_index, tmp_path / "shot.png")
    assert (check.images, check.broken, check.overflowing) == (figure_count, 0, 0)  # every table fits 1400 px
    assert check.screenshot == (tmp_path / "shot.png").resolve()
    assert check.height > 3000  # five figures and the tables
    assert png_size(check.screenshot) == (1400, check.height)  # the whole page, not the first screen
    assert check.screenshot.stat().st_size > 50_000  # figures and tables, not a blank page


@needs_chromium
def test_a_broken_image_is_detected(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        f'<!doctype html><html><body><img src="data:image/png;base64,{PIXEL}">'
        f'<img src="data:image/png;base64,bm90IGEgcG5n">{IMAGE_CHECK_SCRIPT}</body></html>'
    )
    check = check_page(page, tmp_path / "shot.png")
    assert (check.images, check.broken, check.overflowing) == (2, 1, 0)


@needs_chromium
def test_a_table_wider_than_the_page_is_detected(tmp_path):
    cells = "".join(f'<td style="white-space: nowrap">{"wide cell " * 5}</td>' for _ in range(20))
    page = tmp_path / "wide.html"
    page.write_text(
        f'<!doctype html><html><body><main><div class="scroll" style="overflow-x: auto"><table><tr>{cells}</tr>'
        f'</table></div></main>{IMAGE_CHECK_SCRIPT}</body></html>'
    )
    assert check_page(page, tmp_path / "shot.png").overflowing == 1


@needs_chromium
def test_a_page_without_the_check_script_is_an_error(tmp_path):
    page = tmp_path / "plain.html"
    page.write_text("<!doctype html><html><body><p>no script</p></body></html>")
    with pytest.raises(BrowserError, match="image check did not run"):
        check_page(page, tmp_path / "shot.png")


def test_missing_chromium_is_a_clear_error(tmp_path):
    with pytest.raises(BrowserError, match="chromium not found"):
        check_page(tmp_path / "page.html", tmp_path / "shot.png", chromium=tmp_path / "no-chromium")
