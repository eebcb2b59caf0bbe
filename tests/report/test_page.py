"""The report page: written, self-contained, every group and figure in it; Markdown twin; the CLI."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from prokd.cli import app
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.report import sections
from prokd.report.blocks import Bullets, Facts, Heading, Plot, Table
from prokd.report.folder import Experiment

GROUPS = ("teacher-a", "teacher-b", "student-multi")


def test_html_is_self_contained_with_every_group_and_figure(report_index, figure_count):
    html = report_index.read_text()
    for group in GROUPS:
        assert group in html
    assert 'src="figures/' not in html
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == html.count("<img") == figure_count
    assert all(src.startswith("data:image/png;base64,iVBOR") for src in sources)
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)  # nothing fetched from elsewhere
    assert "Pareto-optimal groups (fastest first): student-multi" in html
    assert "Field of view" not in html  # no group was evaluated under the field-of-view shifts
    assert "4 cases (SiteA 1, SiteB 1, SiteC 1, SiteD 1)" in html
    assert "<td>2 seeds</td>" in html and "<td>4 cases</td>" in html  # teacher-a has two seeds, the others one
    assert "prostate, SiteA" in html  # the multi-teacher student's weight table
    assert "Distilled students against their baseline and their best teacher" in html
    assert re.search(r"<tr><td>teacher-a-seed0</td><td>\d+</td><td>[0-9.]+</td>(<td>[0-9.]+</td>){4}</tr>", html)
    assert re.search(r"<td>student-multi</td><td>[0-9.]+ \(n = 1\)</td><td>–</td>.*<td>teacher-[ab]-seed0</td>", html)
    # one seed and one test case per site: n = 1, not a zero spread
    assert re.search(r"<tr><td>teacher-b</td>(<td>[0-9.]+ \(n = 1\)</td>){4}</tr>", html)


def test_the_page_opens_with_the_summary_and_links_every_figure_to_its_full_size_file(report_index, figure_count):
    html = report_index.read_text()
    headings = re.findall(r"<h2>([^<]+)</h2>", html)
    assert headings[:3] == ["Summary", "Run", "Results"]
    summary = html[html.index("<h2>Summary</h2>"):html.index("<h2>Run</h2>")]
    assert re.search(r"<li>student-multi: no student trained on the same cases without teachers to compare with; "
                     r"vs its best teacher teacher-[ab]-seed0: [+-][0-9.]+ points</li>", summary)
    assert "<li>Best model overall: " in summary and "Compared: 2 teacher and 1 student groups" in summary
    assert "<th>labeled cases</th>" in summary and "<td>10 steps</td>" in summary and "<td>2, adaptive</td>" in summary
    links = re.findall(r'<a href="(figures/[^"]+\.png)"[^>]*><img src="data:image/png', html)
    assert len(links) == figure_count and "figures/overlays.png" in links
    assert all((report_index.parent / link).is_file() for link in links)
    assert "median of 7 repeats per model, all models timed in one pass" in html
    assert "sky blue (#56B4E9), prediction orange (#E69F00)" in html


def test_markdown_references_the_written_figures(report_index, figure_count):
    report = report_index.parent
    markdown = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == figure_count
    assert all((report / link).is_file() and (report / link).read_bytes().startswith(b"\x89PNG") for link in links)
    assert sorted(p.name for p in (report / "figures").glob("*.png")) == sorted(link.split("/")[-1] for link in links)
    for group in GROUPS:
        assert f"| {group} |" in markdown


def test_the_field_of_view_section_and_figure_appear_for_a_group_evaluated_under_the_shifts(experiment_dir,
                                                                                             monkeypatch):
    experiment = Experiment.load(experiment_dir)
    curve = {shift.name: {"dice": 0.8 if shift.kind == "original" else 0.75, "ceiling": 1.0}
             for shift in FIELD_OF_VIEW_CURVE}
    experiment.groups = [{**g, "field_of_view": curve} if g["group"] == "student-multi" else g
                         for g in experiment.groups]
    for costly in ("overlays", "teachers", "calibration"):  # whole-volume predictions: not what this is about
        monkeypatch.setattr(sections, costly, lambda *args: [])
    _, blocks = sections.report_blocks(experiment)
    start = blocks.index(Heading("Field of view"))
    assert blocks[start - 2] == Heading("Dice per site")
    note, table, plot = blocks[start + 1:start + 4]
    assert "within 2 points of the original at every shift" in note.text
    assert table.header[1:7] == ["original", "crop 0.6x", "pad 1.5x", "pad 2x", "resample 0.5x", "resample 2x"]
    assert table.rows == [
        ["ceiling: the label itself", *["1.000"] * 6, "+0.0 (crop 0.6x)", "–"],
        ["student-multi", "0.800", *["0.750"] * 5, "-5.0 (crop 0.6x)", "no"],
    ]
    assert isinstance(plot, Plot) and plot.name == "field_of_view" and plot.png.startswith(b"\x89PNG")


def test_blocks_escape_html_and_markdown():
    table = Table(["a|b", "<c>"], [["1 | 2", "x<y"]])
    assert "&lt;c&gt;" in table.html() and "x&lt;y" in table.html()
    assert table.markdown().splitlines()[0] == "| a\\|b | <c> |"
    assert Facts([("git", "abc")]).markdown() == "- **git**: abc"
    assert Bullets(["a <b>", "c"]).html() == "<ul><li>a &lt;b&gt;</li><li>c</li></ul>"
    assert Bullets(["a", "c"]).markdown() == "- a\n- c"
    plot = Plot("fig", b"\x89PNG", "a <caption>")
    assert plot.markdown() == "![fig](figures/fig.png)\n\n*a <caption>*"
    assert 'src="data:image/png;base64,iVBORw==' in plot.html() and "a &lt;caption&gt;" in plot.html()
    assert '<a href="figures/fig.png" title="open at full size"><img ' in plot.html()


def test_experiment_folder_best_group_and_rows(experiment_dir):
    experiment = Experiment.load(experiment_dir)
    assert experiment.best_group()["group"] == "student-multi"  # the only student group
    assert [r["seed"] for r in experiment.group_rows("teacher-a")] == [0, 1]
    assert experiment.sites() == ["SiteA", "SiteB", "SiteC", "SiteD"]


def test_cli_report_prints_the_page_and_replaces_stale_figures(experiment_dir, report_index):
    stale = experiment_dir / "report" / "figures" / "stale.png"
    stale.write_bytes(b"old")
    result = CliRunner().invoke(app, ["report", str(experiment_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip().replace("\n", "") == str(report_index)
    assert not stale.exists()


def test_cli_report_on_a_folder_without_results_is_one_error_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "results.json: not found" in result.output and "Traceback" not in result.output
