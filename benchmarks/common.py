"""Shared by the benchmark scripts: results JSON with provenance, BENCHMARKS.md sections.

Training a run or resuming it, its efficiency and ``mean ± sd`` live in :mod:`prokd.experiment` (also used by
``prokd experiment``) and are re-exported here under their old names.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prokd.experiment.results import mean_sd, results_markdown
from prokd.experiment.stages import efficiency, finished, train_or_resume
from prokd.runs.folder import environment_info

__all__ = ["BENCHMARKS_MD", "DEFAULT_PROMISE12", "ROOT", "efficiency", "experiment_markdown", "finished", "mean_sd",
           "provenance", "require_trained", "train_or_resume", "update_section", "write_results"]

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
DEFAULT_PROMISE12 = ROOT.parent / "shared" / "data" / "promise12"


def require_trained(runs: Path, names: Iterable[str], config: str = "configs/promise12_deploy.yaml") -> None:
    """Exit with one line naming the RUN folders of ``runs`` that have no ``best.pt`` yet, and the experiment that
    trains them."""
    missing = [name for name in names if not (runs / name / "checkpoints" / "best.pt").is_file()]
    if missing:
        sys.exit(f"{runs}: not trained yet: {', '.join(missing)} (run benchmarks/experiment.py {config} first)")


def write_results(path: Path, results: dict[str, Any], seed: int) -> dict[str, Any]:
    """Write ``results`` with versions, git hash, seed and host facts (``env``); returns what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"env": environment_info(seed), **results}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def provenance(env: dict[str, Any]) -> str:
    """One sentence for a BENCHMARKS.md section: when, at which commit, with which versions, on what machine."""
    return (
        f"Run {env['date'][:10]}, git `{env['git']}`, prokd {env['prokd']}, torch {env['torch']}, MONAI {env['monai']}, "
        f"Python {env['python']}; {env['cpu_count']} CPU cores ({env['processor']}), no GPU."
    )


def update_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def experiment_markdown(results: dict[str, Any], title: str, command: str, note: str = "") -> str:
    """A BENCHMARKS.md section from an experiment's results (:func:`prokd.experiment.results.collect_results`):
    the command, the provenance of the run (date, git hash, versions, host) and the experiment's own tables."""
    body = results_markdown(results).split("\n", 1)[1].replace("\n## ", "\n### ")
    return "\n".join([f"## {title}", "", f"Command: `{command}`. {provenance(results['env'])} {note}".rstrip(), body])
