"""The experiment report: ``DIR/report/index.html`` (self-contained) and ``report.md`` with PNG figures.

Modules: :mod:`~prokd.report.folder` (reading the experiment folder), :mod:`~prokd.report.figures` (plots),
:mod:`~prokd.report.overlays` (qualitative cases, overlays, teacher disagreement), :mod:`~prokd.report.weights`
(multi-teacher aggregation weights), :mod:`~prokd.report.sections` (the content), :mod:`~prokd.report.blocks`
and :mod:`~prokd.report.page` (HTML and Markdown), :mod:`~prokd.report.browser` (headless-browser check).
"""
