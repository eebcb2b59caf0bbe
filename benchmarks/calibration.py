"""Temperature scaling on PROMISE12: each deploy model's temperature fitted on its validation cases, and what it
does to the calibration of the test cases it never saw.

    python benchmarks/experiment.py configs/promise12_deploy.yaml    # first: the teacher and the students
    python benchmarks/calibration.py

For the full teacher and the six distilled students of ``configs/promise12_deploy.yaml``, :func:`calibrate_run`
fits the temperature on the gland slices of the validation cases (as ``prokd calibrate`` does); the negative
log-likelihood and expected calibration error of the test cases' gland slices are then measured at T = 1 and at the
fitted T. Masks, and so Dice, do not change.

Writes ``benchmarks/results/calibration.json`` and the ``calibration`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import DEFAULT_PROMISE12, ROOT, provenance, require_trained, update_section, write_results
from deploy import SEEDS, STUDENTS, TEACHER

from prokd.eval.calibration import calibrate_run, gland_logits, reliability
from prokd.table import markdown_table


def main() -> None:
    runs = ROOT / "benchmarks" / "out" / "promise12_deploy" / "runs"
    names = [TEACHER, *(name.format(seed) for name in STUDENTS.values() for seed in SEEDS)]
    require_trained(runs, names)
    results = {
        "command": shlex.join(["python", "benchmarks/calibration.py", *sys.argv[1:]]),
        "runs": [calibration_row(runs / name, DEFAULT_PROMISE12) for name in names],
    }
    written = write_results(ROOT / "benchmarks" / "results" / "calibration.json", results, seed=0)
    update_section("calibration", markdown(written))
    print(markdown(written))


def calibration_row(run: Path, data: Path) -> dict[str, Any]:
    """The validation-fitted temperature of ``run`` and the test cases' NLL and ECE at T = 1 and at it."""
    fitted = calibrate_run(run, data, write=False)
    logits, labels, cases = gland_logits(run, data, "test")
    z, y = torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(labels.astype(np.float64))
    test = {
        name: {"nll": float(F.binary_cross_entropy_with_logits(z / t, y)),
               "ece": reliability(torch.sigmoid(z / t).numpy(), labels).ece}
        for name, t in (("before", 1.0), ("after", fitted.temperature))
    }
    return {"run": run.name, "temperature": fitted.temperature, "val_cases": len(fitted.cases),
            "val_ece": {"before": fitted.before.ece, "after": fitted.after.ece}, "test_cases": len(cases),
            "test": test}


def markdown(results: dict[str, Any]) -> str:
    header = ["run", "T (val)", "val ECE", "test NLL", "test ECE"]
    body = [[row["run"], f"{row['temperature']:.3f}",
             f"{row['val_ece']['before']:.4f} → {row['val_ece']['after']:.4f}",
             f"{row['test']['before']['nll']:.4f} → {row['test']['after']['nll']:.4f}",
             f"{row['test']['before']['ece']:.4f} → {row['test']['after']['ece']:.4f}"] for row in results["runs"]]
    first = results["runs"][0]
    return "\n".join([
        "## Temperature scaling (PROMISE12)",
        "",
        f"Command: `{results['command']}` (after `python benchmarks/experiment.py configs/promise12_deploy.yaml`). "
        f"{provenance(results['env'])} Temperature fitted on the gland slices (label or prediction has foreground) of "
        f"the {first['val_cases']} validation cases, as `prokd calibrate` does; NLL and expected calibration error "
        f"(10 bins) of the {first['test_cases']} test cases' gland slices at T = 1 → at the fitted T. Masks and Dice "
        "do not change.",
        "",
        *markdown_table(header, body),
    ])


if __name__ == "__main__":
    main()
