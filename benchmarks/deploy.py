"""Deployment benchmark on PROMISE12: speed per engine, int8 accuracy per site, uncertainty against errors.

    python benchmarks/experiment.py configs/promise12_deploy.yaml    # first: the teacher and the students
    python benchmarks/deploy.py

From the experiment folder of ``configs/promise12_deploy.yaml`` (``benchmarks/out/promise12_deploy``):

1. **Speed**: the full teacher (``unet-large``), the distilled ``unet-small`` and the distilled ``mobile-unet``
   (seed 0 of each), each on PyTorch, ONNX Runtime fp32 and ONNX Runtime int8, timed together by
   ``prokd benchmark``'s routine (:func:`prokd.infer.benchmark.benchmark`): one slice of the models' 160 x 160
   grid, and the whole prediction of a 24 x 256 x 256 phantom volume with and without flip TTA, parts apart.
2. **int8**: every seed of both distilled students and the teacher, exported to fp32 and int8 ONNX (int8 calibrated
   on 64 training slices); 3D Dice on the test cases per site, PyTorch against int8.
3. **Uncertainty**: per test case of every student seed, the entropy score of ``prokd predict --uncertainty``
   (mean entropy over the voxels with a foreground probability of at least 0.05) against 1 - Dice (Spearman),
   and the scores of the validation cases, on which the score was chosen and the review threshold is set.

Writes ``benchmarks/results/deploy.json`` and the ``deploy`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import DEFAULT_PROMISE12, ROOT, provenance, require_trained, update_section, write_results
from scipy import stats

from prokd.data.datalist import load_case, load_cases
from prokd.eval.evaluate import evaluate_run
from prokd.eval.metrics import case_metrics
from prokd.infer.benchmark import ENGINES, benchmark, benchmark_volume, load_candidates, slice_table, volume_table
from prokd.infer.export import export_onnx
from prokd.infer.predict import Predictor
from prokd.infer.uncertainty import binary_entropy, entropy_score
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.table import markdown_table

TEACHER = "teacher-full-seed0"
STUDENTS = {"unet-small": "student-kd-all-seed{}", "mobile-unet": "student-kd-all-mobile-seed{}"}
SEEDS = (0, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=ROOT / "benchmarks" / "out" / "promise12_deploy")
    parser.add_argument("--data", type=Path, default=DEFAULT_PROMISE12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    runs = args.experiment / "runs"
    require_trained(runs, [TEACHER, *(s.format(seed) for s in STUDENTS.values() for seed in SEEDS)])
    command = shlex.join(["python", "benchmarks/deploy.py", *sys.argv[1:]])
    results = {
        "command": command,
        "speed": measure_speed(runs, args.threads, args.repeats),
        "int8": measure_int8(runs, args.data, args.threads),
        "uncertainty": measure_uncertainty(runs, args.data),
    }
    written = write_results(ROOT / "benchmarks" / "results" / "deploy.json", results, seed=0)
    update_section("deploy", markdown(written))
    print(markdown(written))


def measure_speed(runs: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    """Teacher, distilled unet-small and distilled mobile-unet (seed 0) on every engine, timed together."""
    sources = [runs / TEACHER, *(runs / name.format(0) for name in STUDENTS.values())]
    with tempfile.TemporaryDirectory() as workdir:
        candidates = load_candidates(sources, ENGINES, threads, Path(workdir))
        image, spacing = benchmark_volume()
        rows = benchmark(candidates, image, spacing, threads=threads, repeats=repeats)
    for row in rows:
        row["name"] = Path(row["name"]).name
    return rows


def measure_int8(runs: Path, data: Path, threads: int) -> list[dict[str, Any]]:
    """3D test Dice per site of each run on PyTorch and as int8 ONNX."""
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for run in [runs / TEACHER, *(runs / name.format(seed) for name in STUDENTS.values() for seed in SEEDS)]:
            exported = export_onnx(run, Path(workdir) / f"{run.name}.onnx", int8=True, threads=threads, data=data)
            fp32 = evaluate_run(run, data, write=False).summary
            int8 = evaluate_run(exported.path, data, write=False, threads=threads).summary
            rows.append({
                "run": run.name,
                "quantization": exported.quantization,
                "fp32": {site: fp32[site]["dice"]["mean"] for site in fp32},
                "int8": {site: int8[site]["dice"]["mean"] for site in int8},
            })
    return rows


def measure_uncertainty(runs: Path, data: Path) -> list[dict[str, Any]]:
    """Per student seed, the entropy score and Dice of every validation and test case."""
    index = load_cases(data)
    rows = []
    for model, name in STUDENTS.items():
        for seed in SEEDS:
            run = runs / name.format(seed)
            payload = load_checkpoint(resolve_checkpoint(run, "best"))
            predictor = Predictor.from_payload(payload)
            for split in ("val", "test"):
                for case in index.select(payload["split"][split]):
                    loaded = load_case(case)
                    prediction = predictor.predict(loaded.image, loaded.geometry.spacing)
                    score = entropy_score(prediction.probability, binary_entropy(prediction.probability))
                    dice = case_metrics(prediction.mask, loaded.label, loaded.geometry.spacing)["dice"]
                    rows.append({"model": model, "seed": seed, "split": split, "case": case.case_id,
                                 "site": case.site, "score": score, "dice": dice})
    return rows


def markdown(results: dict[str, Any]) -> str:
    speed, int8, uncertainty = results["speed"], results["int8"], results["uncertainty"]
    first = speed[0]
    lines = [
        "## Deployment: speed per engine, int8, uncertainty (PROMISE12)",
        "",
        f"Command: `{results['command']}` (after `python benchmarks/experiment.py configs/promise12_deploy.yaml`). "
        f"{provenance(results['env'])} "
        f"{first['threads']} threads, {first['repeats']} interleaved rounds in one process (slices, then volumes); "
        "medians, 10th-90th percentiles in brackets. Slice: one 3 x 160 x 160 input, batch 1, the network alone. "
        f"Volume: a {' x '.join(map(str, first['volume_shape']))} phantom volume, everything but file reading "
        "(preprocessing, batched slices, back to the volume's grid, threshold, largest component).",
        "",
        "### One slice",
        "",
        *markdown_table(*slice_table(speed)),
        "",
        "### Whole volume",
        "",
        *markdown_table(*volume_table(speed)),
        "",
        "### Each student against the teacher on the same engine (ratio of medians)",
        "",
        *markdown_table(*same_engine_table(speed)),
        "",
        "### int8 (static QDQ, 64 calibration slices): 3D test Dice, PyTorch fp32 → ONNX Runtime int8",
        "",
        *markdown_table(*int8_table(int8)),
        "",
        "### Uncertainty: entropy score against 1 − Dice on the test cases",
        "",
        "Score: mean entropy (bits) over the voxels with a foreground probability of at least 0.05.",
        "",
        *markdown_table(*uncertainty_table(uncertainty)),
        "",
        review_note(uncertainty),
    ]
    return "\n".join(lines)


def same_engine_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    teacher = {row["engine"]: row for row in rows if row["name"] == TEACHER}
    header = ["student", "engine", "slice speed-up", "volume speed-up", "volume speed-up with TTA"]
    body = [
        [row["name"], row["engine"],
         *(f"{teacher[row['engine']]['ms'][key]['median'] / row['ms'][key]['median']:.1f}x"
           for key in ("slice", "volume", "volume_tta"))]
        for row in rows if row["name"] != TEACHER
    ]
    return header, body


def review_threshold(rows: list[dict[str, Any]]) -> float:
    """The largest entropy score of any validation case of any student: above it, a case is more uncertain than
    everything the students were selected on."""
    return max(r["score"] for r in rows if r["split"] == "val")


def review_note(rows: list[dict[str, Any]]) -> str:
    threshold = review_threshold(rows)
    val, test = ([r for r in rows if r["split"] == split] for split in ("val", "test"))
    rho, p = stats.spearmanr([r["score"] for r in val], [1 - r["dice"] for r in val])
    flagged = [r for r in test if r["score"] > threshold]
    kept = [r for r in test if r["score"] <= threshold]
    mean = lambda group: sum(r["dice"] for r in group) / len(group)  # noqa: E731
    most = max(test, key=lambda r: r["score"])
    outcome = (f"mean Dice {mean(flagged):.3f}, against {mean(kept):.3f} for the others" if flagged else
               f"the most uncertain test case scores {most['score']:.3f} ({most['case']}, Dice {most['dice']:.2f})")
    return (
        f"On the {len(val)} validation predictions (all students and seeds), where the score was chosen: "
        f"Spearman {rho:+.2f} (p {p:.3f}). "
        f"Review threshold: {threshold:.3f}, the largest score of any validation case (the default of "
        f"`prokd predict --review-above`). Test cases above it: {len(flagged)} of {len(test)} (all students and "
        f"seeds); {outcome}."
    )


def int8_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    sites = sorted(site for site in rows[0]["fp32"] if site != "overall")
    header = ["run", "overall fp32", "int8", "change", *sites]
    body = []
    for row in rows:
        change = {site: 100 * (row["int8"][site] - row["fp32"][site]) for site in row["fp32"]}
        body.append([row["run"], f"{row['fp32']['overall']:.3f}", f"{row['int8']['overall']:.3f}",
                     f"{change['overall']:+.2f} pt", *(f"{change[site]:+.2f} pt" for site in sites)])
    return header, body


def uncertainty_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "seed", "test cases", "Spearman (score, 1 − Dice)", "p", "worst case's rank by score"]
    body = []
    for model in STUDENTS:
        for seed in (*SEEDS, None):
            test = [r for r in rows if r["model"] == model and r["split"] == "test" and seed in (None, r["seed"])]
            rho, p = stats.spearmanr([r["score"] for r in test], [1 - r["dice"] for r in test])
            worst = min(test, key=lambda r: r["dice"])
            rank = 1 + sorted((r["score"] for r in test), reverse=True).index(worst["score"])
            body.append([model, "all" if seed is None else str(seed), str(len(test)), f"{rho:+.2f}", f"{p:.3f}",
                         f"{rank} of {len(test)} ({worst['case']}, Dice {worst['dice']:.2f})"])
    return header, body


if __name__ == "__main__":
    main()
