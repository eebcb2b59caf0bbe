"""Reading an experiment folder, as laid down by the contract with ``prokd experiment``::

    DIR/experiment.yaml          (key ``data``: the dataset)
    DIR/results/results.json     {"env", "experiment", "rows": [ROW...], "groups": [GROUP...]}
    DIR/runs/<stage>/            RUN folders: metrics.jsonl, teachers.json, efficiency.json, eval/test/cases.csv

(docs/architecture.md, "Experiment folder", lists every field.) Every missing file or key is a
:class:`~prokd.runs.folder.RunDirError` naming the file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prokd.runs.folder import RunDirError

RESULT_KEYS = ("env", "experiment", "rows", "groups")


@dataclass
class Experiment:
    """An experiment folder's results and where its runs are.

    Attributes:
        root: the experiment folder DIR.
        name: the experiment's name.
        env: the environment record (versions, git hash, hardware) of ``results.json``.
        rows: one ROW per trained stage, in ``results.json`` order.
        groups: one GROUP per recipe (its seeds pooled), in ``results.json`` order.
        data: the dataset the experiment ran on.
        comparisons: one COMPARISON per distilled student group (empty in results written before them).
        latency: threads and repeats of the latency measurement (None before it, or in older results).
    """

    root: Path
    name: str
    env: dict[str, Any]
    rows: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    data: Path
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] | None = None

    @classmethod
    def load(cls, root: str | Path) -> Experiment:
        root = Path(root)
        results_path = root / "results" / "results.json"
        results = read_json(results_path)
        missing = [key for key in RESULT_KEYS if key not in results]
        if missing:
            raise RunDirError(f"{results_path}: missing keys {', '.join(missing)}")
        config_path = root / "experiment.yaml"
        config = yaml.safe_load(read_text(config_path)) or {}
        if not isinstance(config, dict) or "data" not in config:
            raise RunDirError(f"{config_path}: no key 'data' (the dataset the experiment ran on)")
        if not results["rows"] or not results["groups"]:
            raise RunDirError(f"{results_path}: no rows or no groups; has any stage finished?")
        return cls(
            root,
            results["experiment"],
            results["env"],
            results["rows"],
            results["groups"],
            Path(config["data"]),
            results.get("comparisons", []),
            results.get("latency"),
        )

    def run_dir(self, row: dict[str, Any]) -> Path:
        return self.root / row["run"]

    def group_rows(self, group: str) -> list[dict[str, Any]]:
        """The rows of ``group``, lowest seed first."""
        return sorted((row for row in self.rows if row["group"] == group), key=lambda row: row["seed"])

    def first_seed(self, group: str) -> dict[str, Any]:
        rows = self.group_rows(group)
        if not rows:
            raise RunDirError(f"{self.root / 'results' / 'results.json'}: group '{group}' has no rows")
        return rows[0]

    def sites(self) -> list[str]:
        """Sorted sites of the per-site results."""
        return sorted({site for group in self.groups for site in group["sites"]})

    def best_group(self) -> dict[str, Any]:
        """The student group with the highest mean test Dice (any group when there are no students)."""
        students = [group for group in self.groups if group["kind"] == "student"]
        return max(students or self.groups, key=lambda group: group["overall"]["dice"]["mean"])

    def metrics_log(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The stage's ``metrics.jsonl``: one record per epoch."""
        path = self.run_dir(row) / "metrics.jsonl"
        return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]

    def test_cases(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The stage's per-case test metrics (``eval/test/cases.csv``), with ``dice`` as a float."""
        path = self.run_dir(row) / "eval" / "test" / "cases.csv"
        cases = list(csv.DictReader(read_text(path).splitlines()))
        if not cases or "dice" not in cases[0]:
            raise RunDirError(f"{path}: no per-case rows with a 'dice' column")
        return [{**case, "dice": float(case["dice"])} for case in cases]

    def efficiency(self, row: dict[str, Any]) -> dict[str, Any]:
        return read_json(self.run_dir(row) / "efficiency.json")

    def teacher_runs(self, row: dict[str, Any]) -> list[Path]:
        """The teacher RUN folders of a distillation stage, in the order its objective used them.

        ``teachers.json`` records them as they were given at training time; a path that no longer exists
        (the experiment folder was moved) is looked up by its name under ``DIR/runs/``.
        """
        path = self.run_dir(row) / "teachers.json"
        runs = []
        for record in read_json(path):
            recorded = Path(record["run"])
            run = recorded if recorded.is_dir() else self.root / "runs" / recorded.name
            if not run.is_dir():
                raise RunDirError(f"{path}: teacher run {recorded} not found (nor {run})")
            runs.append(run)
        return runs


def read_text(path: Path) -> str:
    if not path.is_file():
        raise RunDirError(f"{path}: not found; is this a finished experiment folder (see `prokd experiment`)?")
    return path.read_text()


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON ({err})") from None
