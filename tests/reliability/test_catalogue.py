"""The catalogue: every bad input and misuse probed as a new user would, through the CLI, each with the one line
it must print and what must be left untouched. Kills at write boundaries are in ``test_faults.py``; two processes
in ``tests/test_distributed.py``; two experiment workers in ``tests/experiment/test_workers.py``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prokd.cli import app
from prokd.config import save_config
from prokd.train.runner import train_run


@dataclass
class Place:
    """What a probe works with: the phantom, a finished tiny run and its config, and an empty folder of its own."""

    data: Path
    run: Path
    config: Path
    tmp: Path

    def volume(self, name: str, array: np.ndarray | None = None) -> Path:
        """A small NIfTI volume ``tmp/<name>`` (random intensities unless ``array``)."""
        array = np.random.default_rng(0).normal(100, 20, (48, 48, 6)).astype(np.float32) if array is None else array
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)
        return path


@dataclass
class Probe:
    """``args(place)`` run as ``prokd ARGS`` must exit with ``exit_code`` and print ``message`` (one line: no
    traceback); ``after(place)`` checks what it left behind."""

    name: str
    args: Callable[[Place], list[str]]
    message: str
    after: Callable[[Place], None] = field(default=lambda place: None)
    exit_code: int = 1
    env: dict[str, str] = field(default_factory=dict)


def train_args(place: Place, *extra: str) -> list[str]:
    return ["train", "--data", str(place.data), "--out", str(place.tmp / "new"), "--config", str(place.config), *extra]


def threads_recorded(place: Place, threads: int) -> None:
    assert json.loads((place.tmp / "new" / "env.json").read_text())["threads"] == threads


def nothing_made(place: Place) -> None:
    assert not (place.tmp / "new").exists()


def run_intact(place: Place) -> None:
    assert (place.run / "checkpoints" / "best.pt").is_file() and (place.run / "metrics.jsonl").is_file()


def thesis_folder(place: Place) -> Path:
    folder = place.tmp / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work")
    return folder


def thesis(place: Place) -> list[str]:
    folder = thesis_folder(place)
    return ["train", "--data", str(place.data), "--out", str(folder), "--config", str(place.config), "--overwrite"]


def thesis_kept(place: Place) -> None:
    assert (place.tmp / "mine" / "thesis.txt").read_text() == "four years of work"


def overwrite_with_typo(place: Place) -> list[str]:
    shutil.copytree(place.run, place.tmp / "earlier")
    return ["distill", "--data", str(place.data), "--out", str(place.tmp / "earlier"), "--teacher", str(place.run),
            "--config", str(place.config), "--aggregate", "median", "--overwrite"]


def earlier_run_intact(place: Place) -> None:
    assert sorted(p.name for p in (place.tmp / "earlier").rglob("*")) == sorted(p.name for p in place.run.rglob("*"))


def overwrite_through_link(place: Place) -> list[str]:
    shutil.copytree(place.run, place.tmp / "earlier")
    (place.tmp / "link").symlink_to(place.tmp / "earlier")
    return ["train", "--data", str(place.data), "--out", str(place.tmp / "link"), "--config", str(place.config),
            "--overwrite"]


def overwrite_beside_finder_litter(place: Place) -> list[str]:
    shutil.copytree(place.run, place.tmp / "earlier")
    (place.tmp / "earlier" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return ["train", "--data", str(place.data), "--out", str(place.tmp / "earlier"), "--config", str(place.config),
            "--overwrite"]


def replaced(place: Place) -> None:
    assert not (place.tmp / "earlier" / ".DS_Store").exists()
    assert (place.tmp / "earlier" / "checkpoints" / "best.pt").stat().st_mtime > (place.run / "env.json").stat().st_mtime


def same_names(place: Place) -> list[str]:
    return ["predict", str(place.run), str(place.volume("a/case.nii.gz")), str(place.volume("b/case.nii.gz")),
            "--out", str(place.tmp / "masks")]


def no_masks(place: Place) -> None:
    assert not (place.tmp / "masks").exists() or not list((place.tmp / "masks").iterdir())


def truncated_in_folder(place: Place) -> list[str]:
    place.volume("in/good.nii.gz")
    good = place.volume("in/zz-broken.nii.gz").read_bytes()
    (place.tmp / "in" / "zz-broken.nii.gz").write_bytes(good[: len(good) // 2])
    return ["predict", str(place.run), str(place.tmp / "in"), "--out", str(place.tmp / "masks")]


def nan_volume(place: Place) -> list[str]:
    array = np.ones((48, 48, 6), dtype=np.float32)
    array[3, 4, 2] = np.nan
    return ["predict", str(place.run), str(place.volume("nan.nii.gz", array)), "--out", str(place.tmp / "masks")]


class Payload:
    """Pickled as a reference to this class: loading it would import and run code."""


def code_checkpoint(place: Place) -> list[str]:
    folder = place.tmp / "evil" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"model": Payload()}, folder / "best.pt")
    return ["predict", str(place.tmp / "evil"), str(place.volume("x.nii.gz")), "--out", str(place.tmp / "masks")]


def not_gzip(place: Place) -> list[str]:
    path = place.tmp / "fake.nii.gz"
    path.write_bytes(b"this is not a volume")
    return ["predict", str(place.run), str(path), "--out", str(place.tmp / "masks")]


def existing_mask(place: Place) -> list[str]:
    image = place.volume("case.nii.gz")
    (place.tmp / "masks").mkdir()
    (place.tmp / "masks" / "case_mask.nii.gz").write_text("an earlier mask")
    return ["predict", str(place.run), str(image), "--out", str(place.tmp / "masks")]


def earlier_mask_kept(place: Place) -> None:
    assert (place.tmp / "masks" / "case_mask.nii.gz").read_text() == "an earlier mask"


def unknown_data(place: Place) -> list[str]:
    return train_args(place)[:2] + [str(place.tmp / "nowhere")] + train_args(place)[3:]


def non_binary_labels(place: Place) -> list[str]:
    data = place.tmp / "data"
    shutil.copytree(place.data.parent, data)
    label = sorted((data / "labelsTr").iterdir())[0]
    volume = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(volume.dataobj) * 3, volume.affine), label)
    return ["data", "check", str(data)]


PROBES = [
    Probe("overwrite-not-a-run", thesis, "not a prokd run folder (it holds thesis.txt); refusing to delete it",
          after=thesis_kept),
    Probe("overwrite-through-a-symlink", overwrite_through_link, "link: not a prokd run folder (it is a symbolic "
          "link to", after=earlier_run_intact),
    Probe("overwrite-beside-finder-litter", overwrite_beside_finder_litter, "trained 1 epoch (2 steps", after=replaced,
          exit_code=0),
    Probe("overwrite-after-a-typo", overwrite_with_typo, "unknown aggregator 'median'; registered aggregators: adaptive,", after=earlier_run_intact),
    Probe("distill-incompatible-teacher",
          lambda p: ["distill", "--data", str(p.data), "--out", str(p.tmp / "new"), "--teacher", str(p.run)],
          "teacher run: does not see the student's channel and field of view with the same normalisation: "
          "preprocess.size 64 (student: 160), preprocess.target_spacing 2.0 (student: None)", after=nothing_made),
    Probe("distill-without-teacher", lambda p: ["distill", "--data", str(p.data), "--out", str(p.tmp / "new")],
          "distill needs a teacher: --teacher RUN (or distill.teachers in --config)", after=nothing_made),
    Probe("minutes-negative", lambda p: train_args(p, "--minutes", "-1"), "train.time_budget_minutes",
          after=nothing_made),
    Probe("minutes-zero", lambda p: train_args(p, "--minutes", "0"), "train.time_budget_minutes", after=nothing_made),
    Probe("lr-infinite", lambda p: train_args(p, "--set", "train.lr=.inf"), "train.lr", after=nothing_made),
    Probe("lr-nan", lambda p: train_args(p, "--set", "train.lr=.nan"), "train.lr", after=nothing_made),
    Probe("val-every-zero", lambda p: train_args(p, "--set", "train.val_every=0"), "train.val_every",
          after=nothing_made),
    Probe("batch-zero", lambda p: train_args(p, "--set", "train.batch_size=0"), "train.batch_size",
          after=nothing_made),
    Probe("unknown-key", lambda p: train_args(p, "--set", "train.learning_rate=0.1"), "train.learning_rate",
          after=nothing_made),
    Probe("no-data", unknown_data, "nowhere", after=nothing_made),
    Probe("device-unknown", lambda p: train_args(p, "--device", "gpu"), "--device gpu: must be one of auto, cpu, cuda",
          after=nothing_made),
    Probe("omp-threads-honoured", lambda p: train_args(p, "--set", "train.threads=null"), "trained 1 epoch (2 steps",
          after=lambda p: threads_recorded(p, 1), exit_code=0, env={"OMP_NUM_THREADS": "1"}),
    Probe("resume-with-another-model", lambda p: ["train", "--data", str(p.data), "--out", str(p.run), "--resume",
                                                  "--model", "unet-large"],
          "--resume continues the run with its own config.yaml, where model.name is 'unet-tiny', not 'unet-large'",
          after=run_intact),
    Probe("resume-with-more-epochs", lambda p: ["train", "--data", str(p.data), "--out", str(p.run), "--resume",
                                                "--epochs", "5"],
          "where train.epochs is 1, not 5 (drop the option, or train a new run into another --out)", after=run_intact),
    Probe("out-holds-other-files", lambda p: train_args(p)[:4] + [str(thesis_folder(p))] + train_args(p)[5:],
          "mine: exists and is not a prokd run folder (it holds thesis.txt); choose another --out", after=thesis_kept),
    Probe("run-exists", lambda p: ["train", "--data", str(p.data), "--out", str(p.run), "--config", str(p.config)],
          "--resume", after=run_intact),
    Probe("predict-same-names", same_names, "case.nii.gz", after=no_masks),
    Probe("predict-truncated-in-batch", truncated_in_folder, "zz-broken.nii.gz", after=no_masks),
    Probe("predict-nan-names-file", nan_volume, "nan.nii.gz", after=no_masks),
    Probe("predict-not-a-volume", not_gzip, "fake.nii.gz", after=no_masks),
    Probe("predict-existing-mask", existing_mask, "case_mask.nii.gz", after=earlier_mask_kept),
    Probe("checkpoint-with-code", code_checkpoint, "not a prokd checkpoint (refusing to unpickle code)",
          after=no_masks),
    Probe("data-check-non-binary-label", non_binary_labels, "label"),
]


@pytest.fixture(scope="module")
def finished_run(phantom_data, tmp_path_factory, tiny_config) -> tuple[Path, Path]:
    """A finished tiny run and the config it was trained with (one epoch of two steps)."""
    folder = tmp_path_factory.mktemp("catalogue")
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    save_config(config, folder / "tiny.yaml")
    train_run(phantom_data, folder / "run", config)
    return folder / "run", folder / "tiny.yaml"


@pytest.mark.parametrize("probe", PROBES, ids=[probe.name for probe in PROBES])
def test_probe(probe: Probe, phantom_data, finished_run, tmp_path):
    place = Place(phantom_data, *finished_run, tmp_path)
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, probe.args(place), catch_exceptions=False, env={"COLUMNS": "300", **probe.env})
    finally:
        torch.set_num_threads(threads)  # a run sets the process's threads
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == probe.exit_code, result.output
    assert probe.message in result.output, result.output
    assert "Traceback" not in result.output
    assert len(errors) <= 1 or probe.name.startswith("data-check"), result.output  # one line per problem
    probe.after(place)
