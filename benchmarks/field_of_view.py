"""Field-of-view protocol on PROMISE12: 3D Dice of the teacher and the students when the framing changes.

    python benchmarks/experiment.py configs/promise12_deploy.yaml    # first: the teacher and the students
    python benchmarks/field_of_view.py
    python benchmarks/field_of_view.py --experiment promise12_regime_b --variants framings   # the 4-label students
    python benchmarks/field_of_view.py --experiment promise12_regime_c --split val   # choose the rule on validation
    python benchmarks/field_of_view.py --experiment promise12_regime_a --variants relocate framings   # any framing

Every test case of the fixed split is also cropped to 0.6x and padded to 1.5x and 2x its in-plane field of view,
and resampled to 0.5x and 2x its in-plane resolution (:mod:`prokd.eval.field_of_view`); each prediction is mapped
back to the original grid and scored in 3D against the original label (:mod:`prokd.eval.field_of_view_eval`, as
``prokd experiment`` does for entries with ``field_of_view: true``; a run's evaluation is stored in
``RUN/eval/field-of-view/`` and reused while newer than its best checkpoint). Models: the full teacher and every seed
of the distilled ``unet-small`` and ``mobile-unet`` of ``configs/promise12_deploy.yaml``, as they are predicted
by ``prokd predict`` (their own preprocessing, flip TTA, largest component), or for ``promise12_regime_a`` the
teacher trained for any framing and its student (``configs/promise12_regime_a_framing.yaml``) beside the full
teacher and its student; then each again with locate-then-segment
(:mod:`prokd.infer.framing`, ``prokd predict --relocate 2``), its range of gland extents measured on the run's
training cases when the checkpoint predates it, and with a framing search (the first prediction made at several
zooms about the image centre, the most confident kept: ``prokd predict --framings 0.5,0.7,1,1.5,2``), and two
alternatives of it (``--variants``: the search followed by locate-then-segment, and the search without zoom 0.5).
``--split val`` scores the runs' validation cases instead, where a rule is chosen.

Writes ``benchmarks/results/field_of_view.json`` and the ``field-of-view`` section of ``BENCHMARKS.md`` (for another
experiment: ``field_of_view_<name>.json`` and ``field-of-view-<name>``; on validation cases ``..._val.json`` and
``...-val``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_PROMISE12, ROOT, provenance, require_trained, update_section, write_results

from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.eval.field_of_view_eval import FIELD_OF_VIEW_TARGET, field_of_view_of_run, largest_drop, within_target
from prokd.infer.framing import EXTENT_PERCENTILES
from prokd.runs.folder import read_json
from prokd.table import markdown_table

CEILING = "ceiling: the label itself"
"""The Dice the label reaches after the shift and back: what a crop cuts off or a coarser grid blurs."""
SITES = ("BIDMC", "HK", "RUNMC", "UCL")
"""PROMISE12's sites, each held out in turn by ``configs/promise12_regime_c.yaml``."""
EXPERIMENTS = {
    "promise12_deploy": {
        "teacher unet-large": ["teacher-full-seed0"],
        "unet-small, KD": [f"student-kd-all-seed{seed}" for seed in range(3)],
        "mobile-unet, KD": [f"student-kd-all-mobile-seed{seed}" for seed in range(3)],
    },
    "promise12_regime_a": {
        "teacher unet-large": ["teacher-full-seed0"],
        "teacher unet-large, any framing": ["teacher-full-framing-seed0"],
        "unet-small, KD": [f"student-kd-all-seed{seed}" for seed in range(3)],
        "unet-small, KD from the any-framing teacher": [f"student-kd-framing-seed{seed}" for seed in range(3)],
    },
    "promise12_regime_b": {
        "unet-small, 4 labels + calibrated site teachers": [
            f"student-mkd-site-pseudo-calibrated-seed{seed}" for seed in range(3)
        ],
    },
    "promise12_regime_c": {
        "unet-small, three sites' labels": [f"student-three-sites-{site}-seed0" for site in SITES],
    },
}
"""The models evaluated per experiment (``benchmarks/out/<name>``): their runs, one per seed (or held-out site)."""
DEFAULT_EXPERIMENT = "promise12_deploy"
"""Its results are ``field_of_view.json`` and the ``field-of-view`` section; another experiment's carry its name."""
RELOCATE = 2
"""Locate-then-segment passes of the ``relocate`` variant."""
FRAMINGS = [0.5, 0.7, 1.0, 1.5, 2.0]
"""Zooms of the first pass of the ``framings`` variant (the most confident prediction is kept)."""
VARIANTS = {
    "as-trained": ("", None),
    "relocate": (" + locate-then-segment", {"relocate": RELOCATE}),
    "framings": (" + framing search", {"framings": FRAMINGS}),
    "framings-relocate": (" + framing search + locate-then-segment", {"framings": FRAMINGS, "relocate": RELOCATE}),
    "framings-no-half": (" + framing search without 0.5", {"framings": FRAMINGS[1:]}),
}
"""Each model is evaluated as it predicts and with post-processing keys imposed: ``--variants`` name them; the
suffix is appended to the names of the model and of its runs."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default=DEFAULT_EXPERIMENT,
                        help="the experiment under benchmarks/out/ whose runs are evaluated")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["relocate", "framings"])
    parser.add_argument("--split", choices=["test", "val"], default="test", help="the runs' cases scored")
    parser.add_argument("--data", type=Path, default=DEFAULT_PROMISE12)
    args = parser.parse_args()
    runs = ROOT / "benchmarks" / "out" / args.experiment / "runs"
    models = EXPERIMENTS[args.experiment]
    trained = [run for names in models.values() for run in names]
    require_trained(runs, trained)
    variants = ["as-trained", *(v for v in args.variants if v != "as-trained")]
    results = {
        "command": shlex.join(["python", "benchmarks/field_of_view.py", *sys.argv[1:]]),
        "experiment": args.experiment,
        "split": args.split,
        "models": models,
        "variants": [VARIANTS[v][0] for v in variants],
        "shifts": [shift.name for shift in FIELD_OF_VIEW_CURVE],
        "relocate": RELOCATE,
        "framings": FRAMINGS,
        "cases": [row for variant in variants for index, run in enumerate(trained)
                  for row in score_run(runs / run, args.data, index == 0 and variant == "as-trained", variant,
                                       args.split)],
    }
    suffix = ("" if args.experiment == DEFAULT_EXPERIMENT else f"_{args.experiment}") + (
        "" if args.split == "test" else f"_{args.split}")
    written = write_results(ROOT / "benchmarks" / "results" / f"field_of_view{suffix}.json", results, seed=0)
    update_section("field-of-view" + suffix.replace("_", "-"), markdown(written))
    print(markdown(written))


def score_run(
    run: Path, data: Path, ceiling: bool, variant: str = "as-trained", split: str = "test"
) -> list[dict[str, Any]]:
    """3D Dice of every case of ``split`` of ``run`` under every shift of the protocol
    (:func:`~prokd.eval.field_of_view_eval.field_of_view_of_run`, with the post-processing of ``variant``, a key of
    :data:`VARIANTS`, as run ``<name><suffix>``) and, with ``ceiling``, of the label itself shifted and mapped back
    (as run :data:`CEILING`)."""
    suffix, postprocess = VARIANTS[variant]
    cases = read_json(run / "split.json")[split]
    evaluation, evaluated = field_of_view_of_run(run, data, cases, postprocess, split)
    name = run.name + suffix
    reused = "stored evaluation, newer than its best checkpoint"
    print(f"{name}: {'evaluated' if evaluated else reused}", flush=True)
    rows = []
    for row in evaluation.rows:
        scores = {name: row["dice"], **({CEILING: row["ceiling"]} if ceiling else {})}
        rows += [{"run": name, "case": row["case"], "site": row["site"], "shift": row["shift"], "dice": dice}
                 for name, dice in scores.items()]
    return rows


def model_means(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean 3D Dice per model (all its seeds and test cases) and shift; each trained model also with every
    variant evaluated."""
    cases = results["cases"]
    models = {CEILING: [CEILING], **{model + suffix: [run + suffix for run in names] for suffix in results["variants"]
                                     for model, names in results["models"].items()}}
    return {
        model: {
            shift: float(np.mean([r["dice"] for r in cases if r["run"] in names and r["shift"] == shift]))
            for shift in results["shifts"]
        }
        for model, names in models.items()
    }


def markdown(results: dict[str, Any]) -> str:
    means = model_means(results)
    header = ["model", *results["shifts"]]
    body = [[model, *(f"{dice[shift]:.3f}" if shift == "original" else
                      f"{dice[shift]:.3f} ({100 * (dice[shift] - dice['original']):+.1f})" for shift in results["shifts"])]
            for model, dice in means.items()]
    verdict = "; ".join(f"{model}: worst {largest_drop(dice)[1]:+.1f} points "
                        f"({'met' if within_target(dice) else 'missed'})"
                        for model, dice in means.items() if model != CEILING)
    zooms = [f"{z:g}" for z in results["framings"]]
    explained = {
        VARIANTS["relocate"][0]: f"*{VARIANTS['relocate'][0].strip(' +')}*: the same model with up to "
        f"{results['relocate']} more passes, each on a box around the gland found when its extent on the grid is out "
        f"of the training cases' range (the {EXTENT_PERCENTILES[0]:g}th to {EXTENT_PERCENTILES[1]:g}th percentile), "
        f"reframed to the range's nearer end (`prokd predict --relocate {results['relocate']}`).",
        VARIANTS["framings"][0]: f"*{VARIANTS['framings'][0].strip(' +')}*: the first prediction made at zooms "
        f"{', '.join(zooms)} about the image centre, the most confident kept (`prokd predict --framings "
        f"{','.join(zooms)}`).",
        VARIANTS["framings-relocate"][0]: "*framing search + locate-then-segment*: both.",
        VARIANTS["framings-no-half"][0]: f"*framing search without 0.5*: zooms {', '.join(zooms[1:])}.",
    }
    split = results["split"]
    title = ("" if results["experiment"] == DEFAULT_EXPERIMENT else f", `{results['experiment']}`") + (
        "" if split == "test" else f", {split} cases")
    cases = "Test cases of the fixed split" if split == "test" else f"The runs' {split} cases"
    return "\n".join([
        f"## Field of view: 3D {split} Dice when the framing changes (PROMISE12{title})",
        "",
        f"Command: `{results['command']}` (after `python benchmarks/experiment.py configs/{results['experiment']}.yaml`). "
        f"{provenance(results['env'])} {cases} cropped to 0.6x or padded to 1.5x and 2x their "
        "in-plane field of view, or resampled to 0.5x and 2x their in-plane resolution; masks mapped back to the "
        "original grid. Mean 3D Dice over the cases (and runs), change from the original in points. "
        + " ".join(explained[suffix] for suffix in results["variants"] if suffix in explained),
        "",
        *markdown_table(header, body),
        "",
        f"Target (issue 13): within {FIELD_OF_VIEW_TARGET:g} points of the original at every shift. {verdict}.",
    ])

if __name__ == "__main__":
    main()
