"""CPU time of one optimisation step in each training mode: supervised, single-teacher KD with each feature term,
and multi-teacher KD with each aggregation, with the teachers run at every step or served from the cache.

    python benchmarks/kd_step_time.py [--threads 2] [--size 160] [--steps 10]

Student ``unet-small`` (0.41 M), teachers ``unet-large`` (6.5 M), 2.5D input (3 slices), batch 8, random weights
and random images (the cost of a step does not depend on what was learnt). A step is the objective's forward
pass (student, teachers unless cached, aggregation, every loss term), backward and AdamW update; drawing and
augmenting the batch is not included (it is the same for every mode). With the cache, the teachers' logits
arrive with the batch, as they do from ``SliceSampler(teacher_maps=...)``; filling the cache costs one teacher
forward pass per slice, once per run. Writes ``benchmarks/results/kd_step_time.json`` and the
``kd-step-time`` section of ``BENCHMARKS.md``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from common import ROOT, update_section, write_results

from prokd.config import DistillConfig, PreprocessConfig
from prokd.data.slices import Batch
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import Teacher
from prokd.losses import SegmentationLoss
from prokd.models import build_model, get_spec
from prokd.train.loop import SupervisedObjective

COMMAND = "python benchmarks/kd_step_time.py"
STUDENT, TEACHER, BATCH = "unet-small", "unet-large", 8


@dataclass
class Mode:
    """One way of training the student: its teachers, distillation settings and whether teachers are cached."""

    name: str
    teachers: int = 0
    distill: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


MODES = [
    Mode("supervised (Dice + Lovász + CE)"),
    Mode("KD, KL", 1, {"kl": 1.0}),
    Mode("KD, KL + attention", 1, {"kl": 1.0, "feature": 1000.0, "feature_term": "attention"}),
    Mode("KD, KL + hint (1×1 adapters)", 1, {"kl": 1.0, "feature": 1.0, "feature_term": "hint"}),
    Mode("KD, KL + affinity", 1, {"kl": 1.0, "feature": 1.0, "feature_term": "affinity"}),
    Mode("KD, KL, cached teacher", 1, {"kl": 1.0}, cached=True),
    Mode("4 teachers, mean", 4, {"aggregate": "mean"}),
    Mode("4 teachers, adaptive", 4, {"aggregate": "adaptive"}),
    Mode("4 teachers, mean, cached", 4, {"aggregate": "mean"}, cached=True),
    Mode("4 teachers, adaptive, cached", 4, {"aggregate": "adaptive"}, cached=True),
    Mode("4 teachers, learned, cached", 4, {"aggregate": "learned"}, cached=True),
]


def objective_for(mode: Mode, student: torch.nn.Module, preprocess: PreprocessConfig) -> torch.nn.Module:
    seg_loss = SegmentationLoss()
    if not mode.teachers:
        return SupervisedObjective(seg_loss)
    teachers = [teacher(preprocess, k) for k in range(mode.teachers)]
    config = DistillConfig(cache_teachers=mode.cached, **mode.distill)
    taps = get_spec(STUDENT).default_taps
    return DistillationObjective(student, taps, preprocess, teachers, seg_loss, config)


def teacher(preprocess: PreprocessConfig, k: int) -> Teacher:
    model = build_model(TEACHER, in_channels=preprocess.in_channels, out_channels=1).eval()
    model.requires_grad_(False)
    taps = get_spec(TEACHER).default_taps
    return Teacher(f"teacher{k}", model, preprocess, taps, score=0.5 + 0.1 * k, out_channels=1)


def batch_for(mode: Mode, objective: torch.nn.Module, preprocess: PreprocessConfig) -> Batch:
    size = preprocess.size
    x = torch.randn(BATCH, preprocess.in_channels, size, size)
    y = (torch.rand(BATCH, 1, size, size) > 0.9).float()
    labeled = torch.tensor([True, False] * (BATCH // 2))
    cached = None
    if mode.cached:
        cached = torch.cat([t(x)[0] for t in objective.teachers], dim=1)
    return Batch(x, y, labeled, teacher=cached)


def step_ms(mode: Mode, size: int, steps: int) -> float:
    """Median wall time of ``steps`` optimisation steps after two warm-up steps, in milliseconds."""
    torch.manual_seed(0)
    preprocess = PreprocessConfig(size=size, context=1)
    student = build_model(STUDENT, in_channels=preprocess.in_channels, out_channels=1)
    objective = objective_for(mode, student, preprocess)
    parameters = [p for p in [*student.parameters(), *objective.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    batch = batch_for(mode, objective, preprocess)
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        loss, _ = objective(student, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for mode in MODES:
        ms = step_ms(mode, args.size, args.steps)
        rows.append({"mode": mode.name, "teachers": mode.teachers, "cached": mode.cached, "ms_per_step": ms})
        print(f"{mode.name:40s} {ms:8.0f} ms")
    supervised = rows[0]["ms_per_step"]
    write_results(ROOT / "benchmarks" / "results" / "kd_step_time.json",
                  {"command": COMMAND, "args": vars(args), "rows": rows}, seed=0)
    lines = [
        "## Step time of each training mode",
        "",
        f"Command: `{COMMAND} --threads {args.threads} --size {args.size} --steps {args.steps}`. Student "
        f"`{STUDENT}`, teachers `{TEACHER}`, batch {BATCH} of 3×{args.size}² slices, {args.threads} threads; median "
        f"of {args.steps} steps (forward, every loss term, backward, AdamW) after 2 warm-up steps, batch drawing and "
        "augmentation excluded. Cached: the teachers' logits come with the batch (filled once per slice).",
        "",
        "| mode | teachers | cached | ms / step | × supervised |",
        "|---|---|---|---|---|",
        *(f"| {r['mode']} | {r['teachers']} | {'yes' if r['cached'] else 'no'} | {r['ms_per_step']:.0f} | "
          f"{r['ms_per_step'] / supervised:.1f} |" for r in rows),
    ]
    update_section("kd-step-time", "\n".join(lines))


if __name__ == "__main__":
    main()
