"""CI check: the README's demo command, exactly as printed, run from the clone's root with a tiny budget.

    python3 .ci/readme_demo.py

Takes the first line of the README's "Two commands" block that runs ``prokd demo``, runs it with ``bash`` from
the repository root with ``PROKD_DEMO_STEPS_SCALE`` set (every training budget scaled down to a few optimiser
steps; the command text stays as printed), and fails when the command fails or writes no report. The demo's
output folder (its ``--out``) must not exist yet: this check deletes nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS_SCALE = "0.02"
"""Scales the demo's step budgets (a few steps per stage): the check is about the command, not the numbers."""


def demo_command(readme: str) -> str:
    """The README's demo command: the one line of its first bash block (the "Two commands") that runs it."""
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    lines = [line for line in (block.group(1) if block else "").splitlines() if "prokd demo" in line]
    if len(lines) != 1:
        raise SystemExit(f"README.md: expected one line running `prokd demo` in its first bash block, found {len(lines)}")
    return lines[0].strip()


def demo_out(command: str) -> Path:
    """The folder the command writes: the value of its ``--out`` (relative to the root), else the default."""
    words = shlex.split(command.split("prokd demo", 1)[1])
    out = words[words.index("--out") + 1] if "--out" in words else "prokd-demo"
    return ROOT / out


def main() -> int:
    command = demo_command((ROOT / "README.md").read_text())
    out = demo_out(command)
    if out.exists():
        print(f"{out}: exists; remove it or run this check in a fresh clone", file=sys.stderr)
        return 1
    print(f"$ {command}    (PROKD_DEMO_STEPS_SCALE={STEPS_SCALE}, from {ROOT})", flush=True)
    env = {**os.environ, "PROKD_DEMO_STEPS_SCALE": STEPS_SCALE}
    finished = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env)
    if finished.returncode != 0:
        print(f"README demo command failed with exit code {finished.returncode}", file=sys.stderr)
        return 1
    report = out / "experiment" / "report" / "index.html"
    if not report.is_file():
        print(f"README demo command wrote no report: {report} is missing", file=sys.stderr)
        return 1
    print(f"README demo command: ok, report {report.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
