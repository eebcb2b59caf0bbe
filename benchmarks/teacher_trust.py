"""How the ``trust`` aggregation's label-free score was chosen: six candidate scores against the teachers' true Dice
on sites they never trained on.

    python benchmarks/experiment.py configs/promise12_regime_c_strong.yaml   # first: the four site teachers
    python benchmarks/teacher_trust.py

Each site teacher of ``configs/promise12_regime_c_strong.yaml`` (``unet-large``, trained on one PROMISE12 site with
strong intensity augmentation) predicts every labeled volume of the three other sites, as a hospital without labels
would have them. Per (teacher, volume): the true 3D Dice (probability 0.5 on the teacher's grid mapped back to the
volume's, no flip TTA, no largest component), and each candidate score, computed without the label:

* ``zoom``: soft Dice between the prediction and the prediction on the volume zoomed 0.8 and 1.25 times, mapped
  back (:func:`prokd.distill.trust.zoom_agreement`, as ``volume_trust``);
* ``flip``: the same for a left-right mirror image;
* ``gamma``: the same for the intensities raised to the power 0.7 and 1.5;
* ``consistency``: the mean of the three;
* ``confidence``: 1 - the mean entropy over the voxels of probability >= 0.05 (:mod:`prokd.infer.uncertainty`);
* ``agreement``: soft Dice with the mean prediction of the other two teachers that did not train on the site.

Every site is left out in turn: the score and the sharpening power of the ``trust`` weights are chosen on the other
three sites (the Spearman correlation of score and Dice over their (teacher, volume) pairs; the power maximising the
trust-weighted mean of the teachers' Dice there) and shown on the left-out one, which is what ``trust`` does on a
hospital without labels.

Writes ``benchmarks/results/teacher_trust.json`` and the ``teacher-trust`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DEFAULT_PROMISE12, ROOT, provenance, require_trained, update_section, write_results
from scipy import stats

from prokd.data.datalist import LoadedCase, load_case, load_cases
from prokd.data.preprocess import Preprocessor
from prokd.data.slices import volume_inputs
from prokd.distill.teachers import Teacher, load_teacher
from prokd.distill.trust import soft_dice, teacher_probabilities, zoom_agreement
from prokd.eval.metrics import dice_score
from prokd.infer.uncertainty import binary_entropy, entropy_score
from prokd.table import markdown_table

EXPERIMENT = "promise12_regime_c_strong"
SCORES = ("zoom", "flip", "gamma", "consistency", "confidence", "agreement")
GAMMAS = (0.7, 1.5)
POWERS = (1, 4, 16, 64)


def main() -> None:
    runs = ROOT / "benchmarks" / "out" / EXPERIMENT / "runs"
    index = load_cases(DEFAULT_PROMISE12)
    names = {site: f"teacher-site-{site}-seed0" for site in index.sites()}
    require_trained(runs, names.values(), f"configs/{EXPERIMENT}.yaml")
    teachers = {site: load_teacher(runs / name) for site, name in names.items()}
    rows = []
    for case in index.labeled:
        rows += score_volume(load_case(case), {s: t for s, t in teachers.items() if s != case.site})
        print(f"{case.case_id} ({case.site}): scored", flush=True)
    results = {
        "command": shlex.join(["python", "benchmarks/teacher_trust.py", *sys.argv[1:]]),
        "experiment": EXPERIMENT,
        "teachers": names,
        "rows": rows,
        "left_out": [choose(rows, site) for site in names],
    }
    written = write_results(ROOT / "benchmarks" / "results" / "teacher_trust.json", results, seed=0)
    update_section("teacher-trust", markdown(written))
    print(markdown(written))


def score_volume(loaded: LoadedCase, teachers: dict[str, Teacher]) -> list[dict[str, Any]]:
    """One row per teacher: its true 3D Dice on ``loaded`` and every candidate score."""
    preprocess = [t.preprocess for t in teachers.values()]
    if any(p != preprocess[0] for p in preprocess):
        sys.exit("teacher_trust: the teachers must share their preprocessing (their agreement is compared on one grid)")
    preprocessor = Preprocessor(preprocess[0])
    context = preprocessor.config.context
    plan = preprocessor.plan(loaded.image.shape, loaded.geometry.spacing)
    grid = preprocessor.image_to_grid(loaded.image, plan)
    scaled = np.clip(loaded.image, 0, None) / max(float(np.percentile(loaded.image, 99.5)), 1e-6)
    gamma_grids = [preprocessor.image_to_grid(scaled**gamma, plan) for gamma in GAMMAS]
    inputs = torch.from_numpy(volume_inputs(grid, context))
    base = {site: teacher_probabilities(t, inputs) for site, t in teachers.items()}
    rows = []
    for site, teacher in teachers.items():
        mirrored = probabilities(teacher, grid[..., ::-1].copy(), context)[..., ::-1]
        probs = base[site][:, 0].numpy()
        others = np.mean([p[:, 0].numpy() for other, p in base.items() if other != site], axis=0)
        row = {
            "case": loaded.case.case_id,
            "site": loaded.case.site,
            "teacher": site,
            "dice": dice_score(preprocessor.grid_to_volume(probs, plan) >= 0.5, loaded.label),
            "zoom": zoom_agreement(teacher, inputs, base[site]),
            "flip": soft_dice(probs, mirrored),
            "gamma": float(np.mean([soft_dice(probs, probabilities(teacher, g, context)) for g in gamma_grids])),
            "confidence": 1 - entropy_score(probs, binary_entropy(probs)),
            "agreement": soft_dice(probs, others),
        }
        row["consistency"] = float(np.mean([row["zoom"], row["flip"], row["gamma"]]))
        rows.append(row)
    return rows


def probabilities(teacher: Teacher, grid: np.ndarray, context: int) -> np.ndarray:
    """``(Z, S, S)`` foreground probability of ``teacher`` for a volume ``(Z, S, S)`` on its grid."""
    return teacher_probabilities(teacher, torch.from_numpy(volume_inputs(grid, context)))[:, 0].numpy()


def spearman(rows: Sequence[dict[str, Any]], score: str) -> float:
    """Spearman correlation of ``score`` and the true Dice over ``rows``."""
    return float(stats.spearmanr([r[score] for r in rows], [r["dice"] for r in rows]).statistic)


def site_means(rows: Sequence[dict[str, Any]], site: str, key: str) -> dict[str, float]:
    """``{teacher: mean of key over site's volumes}``."""
    teachers = sorted({r["teacher"] for r in rows if r["site"] == site})
    return {t: float(np.mean([r[key] for r in rows if r["site"] == site and r["teacher"] == t])) for t in teachers}


def weighted_dice(rows: Sequence[dict[str, Any]], site: str, score: str, power: float) -> float:
    """The teachers' mean Dice on ``site`` weighted as ``trust`` weighs them: the site's mean score to ``power``."""
    dice, trust = site_means(rows, site, "dice"), site_means(rows, site, score)
    weights = np.array([trust[t] for t in dice]) ** power
    return float(weights @ np.array(list(dice.values())) / weights.sum())


def choose(rows: Sequence[dict[str, Any]], left_out: str) -> dict[str, Any]:
    """The score and power chosen on every site but ``left_out``, and what they give there."""
    others = [r for r in rows if r["site"] != left_out]
    correlations = {score: spearman(others, score) for score in SCORES}
    score = max(SCORES, key=correlations.__getitem__)
    training_sites = sorted({r["site"] for r in others})
    power = max(POWERS, key=lambda p: np.mean([weighted_dice(others, s, score, p) for s in training_sites]))
    dice, trust = site_means(rows, left_out, "dice"), site_means(rows, left_out, score)
    return {
        "site": left_out,
        "correlations": correlations,
        "score": score,
        "power": power,
        "teacher_dice": dice,
        "teacher_trust": trust,
        "most_trusted": max(trust, key=trust.__getitem__),
        "best": max(dice, key=dice.__getitem__),
        "weighted_dice": weighted_dice(rows, left_out, score, power),
        "mean_dice": float(np.mean(list(dice.values()))),
        "left_out_correlation": spearman([r for r in rows if r["site"] == left_out], score),
    }


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    overall = markdown_table(
        ["score", *(f"Spearman, {c['site']} left out" for c in results["left_out"]), "all pairs"],
        [[score, *(f"{c['correlations'][score]:+.2f}" for c in results["left_out"]), f"{spearman(rows, score):+.2f}"]
         for score in SCORES],
    )
    per_site = markdown_table(
        ["held-out site", "score, power (chosen on the other sites)", "teachers' Dice", "trust", "most trusted",
         "best", "trust-weighted Dice", "mean Dice", "Spearman there"],
        [[c["site"], f"{c['score']}, {c['power']}",
          ", ".join(f"{t} {d:.3f}" for t, d in c["teacher_dice"].items()),
          ", ".join(f"{t} {v:.3f}" for t, v in c["teacher_trust"].items()),
          c["most_trusted"], c["best"], f"{c['weighted_dice']:.3f}", f"{c['mean_dice']:.3f}",
          f"{c['left_out_correlation']:+.2f}"] for c in results["left_out"]],
    )
    return "\n".join([
        "## Teacher trust without labels: choosing the score (PROMISE12)",
        "",
        f"Command: `{results['command']}` (after `python benchmarks/experiment.py configs/{results['experiment']}.yaml`). "
        f"{provenance(results['env'])} Each site teacher of `{results['experiment']}` on every labeled volume of the "
        f"three sites it never trained on ({len(rows)} (teacher, volume) pairs): true 3D Dice against six label-free "
        "scores (`benchmarks/teacher_trust.py` names them). Spearman correlation of score and Dice over the "
        "(teacher, volume) pairs of the three sites other than the one left out:",
        "",
        *overall,
        "",
        "Each site left out in turn, as a hospital without labels: the score with the highest correlation and the "
        "power with the highest trust-weighted Dice on the other three sites, then on the left-out site its "
        "teachers' mean trust, the teacher it trusts most against the best one, and the teachers' Dice weighted by "
        "trust to that power against their plain mean:",
        "",
        *per_site,
    ])


if __name__ == "__main__":
    main()
