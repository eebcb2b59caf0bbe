"""Foundation benchmark on PROMISE12: teacher vs. student from scratch on a fixed site-stratified split,
plus leave-one-site-out (LOSO) generalisation of the teacher.

    python benchmarks/promise12_baseline.py --data ../shared/data/promise12

Writes ``benchmarks/results/promise12_baseline.json`` (config, seed, versions, git hash, per-case rows)
and the ``promise12-baseline`` section of ``BENCHMARKS.md``. Runs land in ``--out``; a finished run is
reused and an interrupted one resumed when the script is started again.

Models and settings are chosen on the validation cases; the test cases are only scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import DEFAULT_PROMISE12, ROOT, mean_sd, train_or_resume, update_section, write_results
from rich.console import Console

from prokd.config import load_config
from prokd.data.datalist import load_cases
from prokd.data.splits import holdout_split, load_split, save_split

SPLIT_FILE = ROOT / "benchmarks" / "splits" / "promise12_holdout.json"
RESULTS = ROOT / "benchmarks" / "results" / "promise12_baseline.json"
CONFIG = ROOT / "configs" / "promise12_train.yaml"
console = Console()


def fixed_split(data: Path) -> dict[str, list[str]]:
    """The committed split (8 test, 4 validation cases, site-stratified); drawn once with seed 0."""
    if SPLIT_FILE.exists():
        return load_split(SPLIT_FILE)
    split = holdout_split(load_cases(data).labeled, val_fraction=4 / 36, test_fraction=8 / 36, seed=0)
    SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
    save_split(split, SPLIT_FILE, seed=0, mode="holdout", data="PROMISE12 (36 labeled cases)")
    return split


def loso_split(data: Path, base: dict[str, list[str]], site: str) -> dict[str, list[str]]:
    """Train/val: the fixed split's train/val cases of the other sites; test: every case of ``site``."""
    site_of = {c.case_id: c.site for c in load_cases(data).labeled}
    return {
        "train": [c for c in base["train"] if site_of[c] != site],
        "val": [c for c in base["val"] if site_of[c] != site],
        "test": sorted(c for c, s in site_of.items() if s == site),
    }


def train_model(data: Path, run_dir: Path, model: str, minutes: float, seed: int, split: dict) -> dict[str, Any]:
    """Train (or finish) one run of ``model`` with the benchmark config; its test evaluation and efficiency."""
    config = load_config(CONFIG, {"model.name": model, "train.time_budget_minutes": minutes, "train.seed": seed})
    return {"model": model, **train_or_resume(data, run_dir, config, split, console)}


def markdown(results: dict[str, Any]) -> str:
    sites = sorted({row["site"] for run in results["holdout"].values() for row in run["cases"]})
    lines = [
        "## PROMISE12 foundation benchmark: teacher vs. student from scratch",
        "",
        f"Command: `{results['command']}`  ",
        f"Split: `benchmarks/splits/promise12_holdout.json` ({results['split_sizes']}); "
        f"config `configs/promise12_train.yaml`; seed {results['seed']}; 3D Dice per case on the test cases, "
        "mean ± sd; latency = median of 30 forward passes of one 1×3×256² slice, 2 threads.",
        "",
        "| model | params | MACs (256²) | CPU latency | train min | val Dice | test Dice | " + " | ".join(sites) + " | HD95 (px) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(sites) + "---|",
    ]
    for role, run in results["holdout"].items():
        summary = run["summary"]
        per_site = [f"{summary[s]['dice']['mean']:.3f}" if s in summary else "–" for s in sites]
        lines.append(
            f"| {role} `{run['model']}` | {run['params'] / 1e6:.2f} M | {run['macs'] / 1e9:.2f} G | "
            f"{run['latency_ms']:.1f} ms | {run['train_minutes']} | {run['best_val_dice']:.3f} | "
            f"{mean_sd([r['dice'] for r in run['cases']])} | " + " | ".join(per_site) + f" | "
            f"{summary['overall']['hd95']['mean']:.1f} |"
        )
    if results.get("loso"):
        lines += [
            "",
            "Leave-one-site-out (teacher trained on the other three sites' training cases, tested on every case "
            "of the held-out site):",
            "",
            "| held-out site | cases | train min | test Dice |",
            "|---|---|---|---|",
        ]
        for site, run in results["loso"].items():
            lines.append(
                f"| {site} | {len(run['cases'])} | {run['train_minutes']} | {mean_sd([r['dice'] for r in run['cases']])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_PROMISE12)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "promise12_baseline")
    parser.add_argument("--teacher-minutes", type=float, default=30.0)
    parser.add_argument("--student-minutes", type=float, default=30.0)
    parser.add_argument("--loso-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-loso", action="store_true")
    args = parser.parse_args()
    if not (args.data / "dataset.json").is_file():
        raise SystemExit(f"{args.data}: PROMISE12 copy not found (pass --data)")

    split = fixed_split(args.data)
    results: dict[str, Any] = {
        "command": "python benchmarks/promise12_baseline.py "
        + f"--teacher-minutes {args.teacher_minutes:g} --student-minutes {args.student_minutes:g} "
        + ("--skip-loso" if args.skip_loso else f"--loso-minutes {args.loso_minutes:g}"),
        "seed": args.seed,
        "config": load_config(CONFIG).to_dict(),
        "split": split,
        "split_sizes": ", ".join(f"{k} {len(v)}" for k, v in split.items()),
        "holdout": {},
        "loso": {},
    }
    for role, model, minutes in (("teacher", "unet-large", args.teacher_minutes), ("student", "unet-small", args.student_minutes)):
        results["holdout"][role] = train_model(args.data, args.out / role, model, minutes, args.seed, split)
    if not args.skip_loso:
        for site in load_cases(args.data).sites():
            run_dir = args.out / f"loso-{site}"
            results["loso"][site] = train_model(
                args.data, run_dir, "unet-large", args.loso_minutes, args.seed, loso_split(args.data, split, site)
            )
    write_results(RESULTS, results, args.seed)
    update_section("promise12-baseline", markdown(results))
    console.print(f"results → {RESULTS} and {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
