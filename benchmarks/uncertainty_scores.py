"""How ``prokd predict --uncertainty``'s per-volume score was chosen: seven candidate scores against 1 - Dice.

    python benchmarks/experiment.py configs/promise12_deploy.yaml    # first: the teacher and the students
    python benchmarks/uncertainty_scores.py

For every validation and test case of the six distilled students of ``configs/promise12_deploy.yaml`` (two models,
three seeds), each candidate score of the prediction (with flip TTA, as ``prokd predict`` runs them) is ranked
against the case's 1 - Dice (Spearman). The score is chosen on the validation predictions only; the test column
shows how the choice holds. The chosen one is :func:`prokd.infer.uncertainty.entropy_score`.

Writes ``benchmarks/results/uncertainty_scores.json`` and the ``uncertainty-scores`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_PROMISE12, ROOT, provenance, require_trained, update_section, write_results
from deploy import SEEDS, STUDENTS
from scipy import ndimage, stats

from prokd.data.datalist import load_case, load_cases
from prokd.eval.metrics import case_metrics
from prokd.infer.predict import Prediction, Predictor
from prokd.infer.uncertainty import binary_entropy
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.table import markdown_table

IN_PLANE = ndimage.generate_binary_structure(2, 1)[None]
"""4-connectivity within each slice, nothing across slices."""


def region_entropy(cut: float) -> Callable[[Prediction, Prediction], float]:
    """Mean entropy over the voxels with a foreground probability of at least ``cut``."""
    def score(tta: Prediction, _: Prediction) -> float:
        region = tta.probability >= cut
        return float(binary_entropy(tta.probability)[region].mean()) if region.any() else 0.0
    return score


def entropy_per_volume(tta: Prediction, _: Prediction) -> float:
    return float(binary_entropy(tta.probability).sum() / max(tta.probability.sum(), 1.0))


def boundary_band_entropy(tta: Prediction, _: Prediction) -> float:
    """Mean entropy within 2 pixels of the predicted boundary, in-plane."""
    mask = tta.mask.astype(bool)
    band = ndimage.binary_dilation(mask, IN_PLANE, 2) & ~ndimage.binary_erosion(mask, IN_PLANE, 2)
    return float(binary_entropy(tta.probability)[band].mean()) if band.any() else 1.0


def soft_dice_gap(tta: Prediction, _: Prediction) -> float:
    p, m = tta.probability, tta.mask
    return float(1 - 2 * (p * m).sum() / max(p.sum() + m.sum(), 1.0))


def tta_disagreement(tta: Prediction, plain: Prediction) -> float:
    """1 - Dice between the masks with and without flip TTA."""
    a, b = tta.mask.astype(bool), plain.mask.astype(bool)
    total = a.sum() + b.sum()
    return float(1 - 2 * (a & b).sum() / total) if total else 0.0


def worst_slice_entropy(tta: Prediction, _: Prediction) -> float:
    """The largest per-slice entropy sum per unit of predicted area."""
    entropy = binary_entropy(tta.probability).sum(axis=(1, 2))
    return float((entropy / np.maximum(tta.probability.sum(axis=(1, 2)), 1.0)).max())


def inverse_volume(tta: Prediction, _: Prediction) -> float:
    return float(1 / max(tta.mask.sum(), 1))


CANDIDATES: dict[str, Callable[[Prediction, Prediction], float]] = {
    **{f"mean entropy where p >= {cut:g}": region_entropy(cut) for cut in (0.01, 0.05, 0.1, 0.2, 0.5)},
    "entropy per unit of predicted volume": entropy_per_volume,
    "mean entropy in a 2-pixel boundary band": boundary_band_entropy,
    "1 - soft Dice of p against its mask": soft_dice_gap,
    "1 - Dice of the masks with and without TTA": tta_disagreement,
    "worst slice's entropy per predicted area": worst_slice_entropy,
    "inverse predicted volume": inverse_volume,
}


def main() -> None:
    runs = ROOT / "benchmarks" / "out" / "promise12_deploy" / "runs"
    names = [name.format(seed) for name in STUDENTS.values() for seed in SEEDS]
    require_trained(runs, names)
    results = {
        "command": shlex.join(["python", "benchmarks/uncertainty_scores.py", *sys.argv[1:]]),
        "cases": [row for name in names for row in score_run(runs / name, DEFAULT_PROMISE12)],
    }
    written = write_results(ROOT / "benchmarks" / "results" / "uncertainty_scores.json", results, seed=0)
    update_section("uncertainty-scores", markdown(written))
    print(markdown(written))


def score_run(run: Path, data: Path) -> list[dict[str, Any]]:
    """Dice and every candidate score of each validation and test case of ``run``."""
    payload = load_checkpoint(resolve_checkpoint(run, "best"))
    predictor = Predictor.from_payload(payload)
    plain = Predictor.from_payload(payload)
    plain.postprocess = dataclasses.replace(plain.postprocess, flip_tta=False)
    rows = []
    for split in ("val", "test"):
        for case in load_cases(data).select(payload["split"][split]):
            loaded = load_case(case)
            tta = predictor.predict(loaded.image, loaded.geometry.spacing)
            without = plain.predict(loaded.image, loaded.geometry.spacing)
            dice = case_metrics(tta.mask, loaded.label, loaded.geometry.spacing)["dice"]
            scores = {name: score(tta, without) for name, score in CANDIDATES.items()}
            rows.append({"run": run.name, "split": split, "case": case.case_id, "dice": float(dice), **scores})
    return rows


def markdown(results: dict[str, Any]) -> str:
    columns = {split: [r for r in results["cases"] if r["split"] == split] for split in ("val", "test")}
    correlations = {
        name: {split: stats.spearmanr([r[name] for r in rows], [1 - r["dice"] for r in rows])
               for split, rows in columns.items()}
        for name in CANDIDATES
    }
    chosen = max(correlations, key=lambda name: correlations[name]["val"][0])
    body = [[name + (" (chosen)" if name == chosen else ""),
             *(f"{rho[split][0]:+.2f} (p {rho[split][1]:.3f})" for split in columns)]
            for name, rho in correlations.items()]
    header = ["score", f"validation: {len(columns['val'])} predictions", f"test: {len(columns['test'])} predictions"]
    return "\n".join([
        "## Uncertainty: choosing the per-volume score (PROMISE12)",
        "",
        f"Command: `{results['command']}` (after `python benchmarks/experiment.py configs/promise12_deploy.yaml`). "
        f"{provenance(results['env'])} Spearman correlation of each candidate score with 1 − Dice (3D, with flip "
        "TTA) over every case of the six distilled students (unet-small and mobile-unet, seeds 0–2). Chosen on the "
        "validation column alone; `prokd predict --uncertainty` uses it.",
        "",
        *markdown_table(header, body),
    ])


if __name__ == "__main__":
    main()
