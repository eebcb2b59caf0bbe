"""Shared by the benchmark scripts: results JSON with provenance, BENCHMARKS.md sections, efficiency rows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from prokd.config import RunConfig
from prokd.eval.efficiency import count_macs, count_parameters, measure_latency
from prokd.eval.evaluate import evaluate_run, summary_table
from prokd.infer.predict import Predictor
from prokd.train.checkpoint import load_checkpoint
from prokd.train.run_folder import environment_info
from prokd.train.runner import train_run

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
DEFAULT_PROMISE12 = ROOT.parent / "shared" / "data" / "promise12"


def efficiency(run_dir: Path, size: int = 256, threads: int = 2) -> dict[str, Any]:
    """Parameters, MACs and median CPU latency for one ``1 x C x size x size`` slice (``threads`` threads)."""
    predictor = Predictor.from_checkpoint(run_dir)
    shape = (1, predictor.preprocessor.config.in_channels, size, size)
    latency = measure_latency(predictor.model, shape, threads=threads, repeats=30)
    return {
        "params": count_parameters(predictor.model),
        "macs": count_macs(predictor.model, shape),
        "latency_ms": latency["median_ms"],
        "latency_input": list(shape),
        "threads": threads,
    }


def write_results(path: Path, results: dict[str, Any], seed: int) -> Path:
    """Write ``results`` with versions, git hash, seed and host facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"env": environment_info(seed), **results}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def update_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def mean_sd(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "–"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has used up its epochs or its time budget."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.exists():
        return False
    payload = load_checkpoint(last)
    train, progress = payload["config"]["train"], payload["progress"]
    budget = train["time_budget_minutes"]
    return progress["epoch"] >= train["epochs"] or (budget is not None and progress["elapsed_seconds"] >= 60 * budget)


def train_or_resume(data: Path, run_dir: Path, config: RunConfig, split: dict, console: Console) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (resume an unfinished run, reuse a finished one); return its test
    evaluation, efficiency and training facts."""
    if (run_dir / "checkpoints" / "last.pt").exists():
        if not finished(run_dir):
            train_run(data, run_dir, config, resume=True, console=console)
    else:
        train_run(data, run_dir, config, split=split, overwrite=True, console=console)
    evaluation = evaluate_run(run_dir, data, split="test")
    console.print(summary_table(evaluation, title=run_dir.name))
    progress = load_checkpoint(run_dir / "checkpoints" / "last.pt")["progress"]
    return {
        "run": str(run_dir),
        "minutes_budget": config.train.time_budget_minutes,
        "train_minutes": round(progress["elapsed_seconds"] / 60, 1),
        "steps": progress["step"],
        "best_epoch": progress["best_epoch"],
        "best_val_dice": progress["best_val_dice"],
        "summary": evaluation.summary,
        "cases": evaluation.rows,
        **efficiency(run_dir),
    }
