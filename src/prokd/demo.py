"""``prokd demo``: the whole pipeline on the built-in phantom, offline, in a few minutes on 2 CPU cores.

phantom (4 sites, NIfTI + datalist) → teacher ``unet-large`` → student ``unet-small`` from scratch →
3D evaluation of both on the held-out phantom cases → prediction of one volume to a NIfTI mask.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from prokd.config import RunConfig
from prokd.data.datalist import load_cases
from prokd.data.phantom import write_phantom
from prokd.eval.efficiency import count_parameters, measure_latency
from prokd.eval.evaluate import Evaluation, evaluate_run, summary_table
from prokd.infer.predict import Predictor, predict_file
from prokd.train.run_folder import RunDirError
from prokd.train.runner import train_run


@dataclass(frozen=True)
class DemoModel:
    """A model trained by the demo, with its time budget in minutes."""

    role: str
    name: str
    minutes: float


DEMO_MODELS = (DemoModel("teacher", "unet-large", 2.5), DemoModel("student", "unet-small", 1.4))


def demo_config(model_name: str, minutes: float, seed: int = 0) -> RunConfig:
    """A short run at 128² on the phantom (its spacing is known: 1.2 mm target spacing), lighter augmentation."""
    return RunConfig.from_dict(
        {
            "model": {"name": model_name},
            "preprocess": {"size": 128, "target_spacing": 1.2},
            "augment": {"affine_prob": 0.5, "bias_field_prob": 0.1, "contrast_prob": 0.1},
            "split": {"val_fraction": 0.15, "test_fraction": 0.25},
            "train": {
                "epochs": 200,
                "steps_per_epoch": 25,
                "time_budget_minutes": minutes,
                "lr": 3e-3,
                "seed": seed,
                "val_every": 4,
            },
        }
    )


def run_demo(
    out: str | Path,
    overwrite: bool = False,
    models: tuple[DemoModel, ...] = DEMO_MODELS,
    console: Console | None = None,
) -> dict[str, Evaluation]:
    """Run the demo into ``out``; returns each model's test-split evaluation."""
    out = Path(out)
    console = console or Console()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"{out}: folder exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    data = write_phantom(out / "phantom", cases_per_site=6, unlabeled_per_site=1, seed=0)
    console.print(f"phantom written: {data}")
    evaluations = {}
    for entry in models:
        console.rule(f"{entry.role}: {entry.name} ({entry.minutes:.1f} min budget)")
        run_dir = out / entry.role
        train_run(data, run_dir, demo_config(entry.name, entry.minutes), console=console)
        evaluations[entry.role] = evaluate_run(run_dir, data, split="test")
        console.print(summary_table(evaluations[entry.role], title=f"{entry.role} ({entry.name}) — test split"))
    console.print(comparison_table(out, models, evaluations))
    test_case = load_cases(data).case(evaluations[models[-1].role].rows[0]["case"])
    mask = predict_file(Predictor.from_checkpoint(out / models[-1].role), test_case.image, out / "predictions")
    console.print(f"predicted {test_case.image.name} with the {models[-1].role} → {mask}")
    return evaluations


def comparison_table(out: Path, models: tuple[DemoModel, ...], evaluations: dict[str, Evaluation]) -> Table:
    """Accuracy against size and CPU speed, one row per model."""
    table = Table(title="prokd demo — phantom test cases (3D)")
    for column in ("role", "model", "params", "latency 1×128² (ms)", "Dice", "HD95"):
        table.add_column(column, justify="left" if column in ("role", "model") else "right")
    for entry in models:
        predictor = Predictor.from_checkpoint(out / entry.role)
        channels = predictor.preprocessor.config.in_channels
        size = predictor.preprocessor.config.size
        latency = measure_latency(predictor.model, (1, channels, size, size), repeats=10)
        overall = evaluations[entry.role].summary["overall"]
        unit = evaluations[entry.role].rows[0]["distance_unit"]
        table.add_row(
            entry.role,
            entry.name,
            f"{count_parameters(predictor.model) / 1e6:.2f} M",
            f"{latency['median_ms']:.1f}",
            f"{overall['dice']['mean']:.3f} ± {overall['dice']['sd']:.3f}",
            f"{overall['hd95']['mean']:.1f} {unit}",
        )
    return table
