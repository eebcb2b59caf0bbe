"""Distillation benchmark on PROMISE12, on the same held-out test cases as the foundation benchmark.

    python benchmarks/promise12_kd.py --regime A --seeds 0 1 2
    python benchmarks/promise12_kd.py --regime B --seeds 0 1 2

Regime A (full data): the full teacher (``unet-large``, all training cases) and the ``unet-small`` student from
scratch, with KL only, with feature distillation only, and with both.
Regime B (limit-trained): one teacher per site, each on its site's training cases only; the student sees the
labels of ``--labelled`` training cases (one per site) plus every other training image and the 29 unlabelled
PROMISE12 volumes without labels. Compared: the student from scratch on the same labels, each single teacher,
single-teacher KD, and multi-teacher KD with every aggregation mode.

Every run is a RUN folder under ``--out``; finished runs are reused and interrupted ones resumed, so the
benchmark can be spread over several sessions. Results: ``benchmarks/results/promise12_kd_<regime>.json`` and
the ``promise12-kd-<regime>`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import DEFAULT_PROMISE12, ROOT, mean_sd, train_or_resume, update_section, write_results
from promise12_baseline import CONFIG, fixed_split
from rich.console import Console

from prokd.config import load_config
from prokd.data.datalist import load_cases
from prokd.data.splits import restrict, subsets_by_site

console = Console()
AGGREGATIONS = ("mean", "weighted", "adaptive", "learned")


@dataclass
class Run:
    """One benchmark run: a name, config overrides, its split and the group it is reported in."""

    name: str
    group: str
    overrides: dict[str, Any]
    split: dict[str, list[str]]
    seeded: bool = True
    results: list[dict[str, Any]] = field(default_factory=list)


def regime_a(split: dict, out: Path, args: argparse.Namespace) -> list[Run]:
    teacher = Run("teacher", "teacher unet-large (all labels)", {"model.name": "unet-large",
                  "train.time_budget_minutes": args.teacher_minutes}, split, seeded=False)
    student = {"model.name": "unet-small", "train.time_budget_minutes": args.student_minutes}
    kd = {**student, "distill.teachers": [str(out / "teacher")]}
    return [
        teacher,
        Run("scratch", "student from scratch", student, split),
        Run("kd-kl", "KD: KL only", {**kd, "distill.kl": 1.0, "distill.feature": 0.0}, split),
        Run("kd-feature", "KD: feature only", {**kd, "distill.kl": 0.0, "distill.feature": args.feature_weight}, split),
        Run("kd-all", "KD: KL + feature", {**kd, "distill.kl": 1.0, "distill.feature": args.feature_weight}, split),
    ]


def regime_b(data: Path, split: dict, out: Path, args: argparse.Namespace) -> list[Run]:
    cases = load_cases(data).labeled
    teacher_model = {"model.name": "unet-large", "train.time_budget_minutes": args.teacher_minutes}
    runs = [
        Run(f"teacher-{site}", f"teacher {site} only", teacher_model, {**split, "train": ids}, seeded=False)
        for site, ids in subsets_by_site(cases, split["train"]).items()
    ]
    teachers = [str(out / run.name) for run in runs]
    labelled = {**split, "train": restrict(split["train"], cases, max_cases=args.labelled, seed=0)}
    student = {"model.name": "unet-small", "train.time_budget_minutes": args.student_minutes}
    kd = {**student, "distill.unlabeled_fraction": args.unlabeled_fraction, "distill.feature": args.feature_weight}
    runs.append(Run("scratch", f"student from scratch ({args.labelled} labels)", student, labelled))
    runs += [
        Run(f"kd-{Path(t).name}", f"KD from {Path(t).name} only", {**kd, "distill.teachers": [t]}, labelled)
        for t in teachers
    ]
    runs += [
        Run(f"mkd-{mode}", f"multi-teacher KD ({mode})", {**kd, "distill.teachers": teachers, "distill.aggregate": mode},
            labelled)
        for mode in AGGREGATIONS
    ]
    return runs


def execute(data: Path, out: Path, runs: list[Run], seeds: list[int]) -> None:
    for run in runs:
        for seed in seeds if run.seeded else seeds[:1]:
            run_dir = out / (f"{run.name}-seed{seed}" if run.seeded else run.name)
            config = load_config(CONFIG, {**run.overrides, "train.seed": seed})
            run.results.append({"seed": seed, **train_or_resume(data, run_dir, config, run.split, console)})


def markdown(regime: str, runs: list[Run], command: str) -> str:
    sites = sorted({row["site"] for run in runs for result in run.results for row in result["cases"]})
    title = {"A": "full-data teacher → student", "B": "limit-trained teachers → student"}[regime]
    lines = [
        f"## PROMISE12 distillation, regime {regime}: {title}",
        "",
        f"Command: `{command}`. Test cases of `benchmarks/splits/promise12_holdout.json`; 3D Dice per case, "
        "averaged per run, then mean ± sd over seeds (the sd is the seed spread).",
        "",
        "| run | seeds | params | CPU latency | test Dice | " + " | ".join(sites) + " |",
        "|---|---|---|---|---|" + "---|" * len(sites),
    ]
    for run in runs:
        per_seed = [result["summary"]["overall"]["dice"]["mean"] for result in run.results]
        per_site = [
            mean_sd([r["summary"][s]["dice"]["mean"] for r in run.results if s in r["summary"]]) for s in sites
        ]
        first = run.results[0]
        lines.append(
            f"| {run.group} | {len(run.results)} | {first['params'] / 1e6:.2f} M | {first['latency_ms']:.1f} ms | "
            f"{mean_sd(per_seed)} | " + " | ".join(per_site) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=("A", "B"), required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_PROMISE12)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "promise12_kd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-minutes", type=float, default=30.0)
    parser.add_argument("--student-minutes", type=float, default=20.0)
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--labelled", type=int, default=4, help="regime B: labelled training cases of the student")
    parser.add_argument("--unlabeled-fraction", type=float, default=0.5)
    args = parser.parse_args()
    if not (args.data / "dataset.json").is_file():
        raise SystemExit(f"{args.data}: PROMISE12 copy not found (pass --data)")
    split = fixed_split(args.data)
    out = args.out / f"regime-{args.regime}"
    runs = regime_a(split, out, args) if args.regime == "A" else regime_b(args.data, split, out, args)
    execute(args.data, out, runs, args.seeds)
    command = (
        f"python benchmarks/promise12_kd.py --regime {args.regime} --seeds {' '.join(map(str, args.seeds))} "
        f"--teacher-minutes {args.teacher_minutes:g} --student-minutes {args.student_minutes:g}"
    )
    results = {"command": command, "regime": args.regime, "args": {k: str(v) for k, v in vars(args).items()},
               "runs": [{"name": r.name, "group": r.group, "overrides": r.overrides, "results": r.results} for r in runs]}
    write_results(ROOT / "benchmarks" / "results" / f"promise12_kd_{args.regime}.json", results, args.seeds[0])
    update_section(f"promise12-kd-{args.regime}", markdown(args.regime, runs, command))


if __name__ == "__main__":
    main()
