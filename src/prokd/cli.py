"""The ``prokd`` command line: thin typer wrappers over the package's functions, one verb per stage."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console

from prokd.config import ConfigError, DistillConfig, RunConfig, load_config
from prokd.data.datalist import DatasetError
from prokd.data.io import VolumeError
from prokd.report.browser import BrowserError
from prokd.files import atomic_write_text
from prokd.infer.uncertainty import REVIEW_ABOVE
from prokd.table import FittedTable
from prokd.threads import default_threads
from prokd.runs.checkpoint import CheckpointError
from prokd.runs.folder import RunDirError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Knowledge distillation for prostate MRI segmentation.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")
app.add_typer(data_app, name="data")
console = Console()
error_console = Console(stderr=True)
"""Where user errors go: one red line on standard error."""


def print_version(value: bool) -> None:
    if value:
        console.print(f"prokd {version('prokd')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Knowledge distillation for prostate MRI segmentation."""

USER_ERRORS = (ConfigError, DatasetError, VolumeError, CheckpointError, RunDirError, BrowserError, FileExistsError, FileNotFoundError, KeyError, ValueError)


def absolute_path(value: Path | list[Path] | None) -> Path | list[Path] | None:
    """A command-line path (or list of them) made absolute against the current working folder at once, so that
    nothing downstream re-roots it (a YAML file's folder, a RUN folder read later from another folder)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [absolute_path(item) for item in value]
    return Path(os.path.abspath(value.expanduser()))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures (bad input, existing outputs) into one red line and exit code 1."""
    try:
        yield
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        rank = os.environ.get("RANK", "0")
        if rank == "0":
            error_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        else:  # another process of a torchrun launch: rank 0 prints the same error, unless it is this rank's own
            print(f"rank {rank}: error: {message}", file=sys.stderr)
        raise typer.Exit(1) from None


def counted(count: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def parse_label_map(text: str | None) -> dict[int, int] | None:
    """``"1:1,2:1"`` → ``{1: 1, 2: 1}`` (values not listed and not 0 are errors when loading)."""
    if not text:
        return None
    try:
        return {int(k): int(v) for k, v in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise ConfigError(f"--label-map must look like '1:1,2:1', got {text!r}") from None


def parse_framings(text: str) -> list[float]:
    """``"0.5,1,2"`` → ``[0.5, 1.0, 2.0]`` (zooms are checked by ``PostprocessConfig``)."""
    try:
        return [float(zoom) for zoom in text.split(",")]
    except ValueError:
        raise ConfigError(f"--framings must list zooms such as '0.5,0.7,1,1.5,2', got {text!r}") from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.lr=0.001", "augment.enabled=false"]`` → dotted keys with YAML-typed values."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(callback=absolute_path, help="Datalist JSON, a folder with dataset.json, or an MSD/nnU-Net folder.")],
    label_map: Annotated[Optional[str], typer.Option(help="Map label values to {0,1}, e.g. '1:1,2:1'.", show_default="none: labels must be 0 or 1")] = None,
    channel: ChannelOption = None,
) -> None:
    """Validate every case and print a per-site table; exit 1 if any case is bad."""
    from prokd.data.check import check_cases, render_report
    from prokd.data.datalist import load_cases

    with user_errors():
        report = check_cases(load_cases(data, require_files=False), parse_label_map(label_map), channel)
    render_report(report, console)
    if not report.ok:
        raise typer.Exit(1)


DEFAULTS = RunConfig()
"""The run settings a flag falls back to when neither it nor ``--config`` gives one."""


def from_config(default: object) -> str:
    """The ``[default: ...]`` shown for a flag whose value comes from ``--config`` when it is not given."""
    return f"from --config, else {default}"


DataOption = Annotated[Path, typer.Option(callback=absolute_path, help="Dataset: datalist JSON, folder with dataset.json, or MSD/nnU-Net folder.")]
OutOption = Annotated[Path, typer.Option(callback=absolute_path, help="RUN folder to create.")]
ConfigOption = Annotated[Optional[Path], typer.Option(callback=absolute_path, help="YAML run config; flags override it.", show_default="the built-in defaults")]
SitesOption = Annotated[Optional[str], typer.Option(help="Use labels of these sites only, comma-separated (distill --no-labels: the sites learnt without labels, whose labeled cases are tested).", show_default=from_config("all sites"))]
CasesOption = Annotated[Optional[int], typer.Option(help="Use labels of at most K cases.", show_default=from_config("all cases"))]
EpochsOption = Annotated[Optional[int], typer.Option(help="Number of epochs.", show_default=from_config(DEFAULTS.train.epochs))]
MinutesOption = Annotated[Optional[float], typer.Option(help="Time budget for training, in minutes.", show_default=from_config("no time budget"))]
SeedOption = Annotated[Optional[int], typer.Option(help="Random seed.", show_default=from_config(DEFAULTS.train.seed))]
LabelMapOption = Annotated[Optional[str], typer.Option(help="Map label values to {0,1}, e.g. '1:1,2:1'.", show_default=from_config("none: labels must be 0 or 1"))]
ChannelOption = Annotated[Optional[int], typer.Option(min=0, help="Channel of multi-channel (4D) images, e.g. 0 for T2 in MSD Task05_Prostate (config key preprocess.channel; a run keeps it).")]
SetOption = Annotated[list[str], typer.Option("--set", help="Any config key, e.g. --set train.lr=0.001.")]
ResumeOption = Annotated[bool, typer.Option(help="Continue an interrupted run in OUT.")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace an earlier RUN folder, once the new run's inputs and options are checked (any other folder is refused).")]
DeviceOption = Annotated[str, typer.Option(help="Where to train: auto (CUDA when available, else the CPU), cpu or cuda.")]
SplitOption = Annotated[Optional[Path], typer.Option(callback=absolute_path, help="Use this split JSON (train/val/test case ids).", show_default="drawn by the config's split settings")]


class UnlabeledImages(str, Enum):
    """What ``--unlabeled`` may name: the images a distillation draws its unlabeled slices from."""

    listed = "listed"
    test = "test"


UnlabeledOption = Annotated[
    Optional[UnlabeledImages],
    typer.Option(help="Images used without labels: 'listed' (the datalist's unlabeled entries; the default) or 'test' (also its test images: 'test' entries, imagesTs/)."),
]


def resolve_config(config: Path | None, flags: dict[str, Any], set_: list[str]):
    """The YAML config (or defaults) with the flags that were given and the ``--set`` overrides applied."""
    overrides = {k: v for k, v in flags.items() if v is not None} | parse_overrides(set_)
    return load_config(config, overrides)


def common_flags(sites, cases, epochs, minutes, seed, label_map, unlabeled: UnlabeledImages | None = None) -> dict[str, Any]:
    return {
        "sites": sites.split(",") if sites else None,
        "max_cases": cases,
        "train.epochs": epochs,
        "train.time_budget_minutes": minutes,
        "train.seed": seed,
        "label_map": label_map,
        "unlabeled_include_test": None if unlabeled is None else unlabeled is UnlabeledImages.test,
    }


def run_training(
    data: Path,
    out: Path,
    config: Path | None,
    flags: dict[str, Any],
    set_: list[str],
    resume: bool,
    overwrite: bool,
    split: Path | None = None,
    needs_teacher: bool = False,
    device: str = "auto",
) -> None:
    """Resolve the config, train (supervised or distilled) into ``out`` and print where it ended; with
    ``needs_teacher`` (``prokd distill``), a new run without a teacher is refused. Under ``torchrun`` only
    rank 0 prints."""
    from prokd.data.splits import load_split
    from prokd.distributed import is_main_process
    from prokd.train.runner import check_resume_keeps, train_run

    with user_errors():
        flags = flags | {"label_map": parse_label_map(flags.get("label_map"))}
        if resume:
            check_resume_keeps(out, config, {k: v for k, v in flags.items() if v is not None} | parse_overrides(set_))
        run_config = resolve_config(config, flags, set_)
        if needs_teacher and not resume and not (run_config.distill and run_config.distill.teachers):
            raise ConfigError("distill needs a teacher: --teacher RUN (or distill.teachers in --config)")
        fixed_split = load_split(split) if split else None
        state = train_run(data, out, run_config, resume=resume, overwrite=overwrite, split=fixed_split,
                          console=console, device=device)
    if not is_main_process():
        return
    best = (f"best val Dice {state.best_val_dice:.3f} at epoch {state.best_epoch}" if state.best_epoch >= 0
            else "no validation cases: best.pt is the last epoch")
    console.print(
        f"trained {counted(state.epoch, 'epoch')} ({counted(state.step, 'step')}, {state.elapsed_seconds / 60:.1f} min);"
        f" {best} → {out}",
        highlight=False, soft_wrap=True,
    )


@data_app.command("phantom")
def data_phantom(
    out: Annotated[Path, typer.Argument(callback=absolute_path, help="Folder to write (imagesTr/, labelsTr/, imagesUn/, dataset.json).")],
    cases_per_site: Annotated[int, typer.Option(help="Labeled cases per site (4 sites).")] = 6,
    unlabeled_per_site: Annotated[int, typer.Option(help="Unlabeled cases per site.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the phantom's anatomy and noise.")] = 0,
) -> None:
    """Write the synthetic multi-site prostate phantom as NIfTI files and a datalist (offline test data)."""
    from prokd.data.phantom import write_phantom

    with user_errors():
        if (out / "dataset.json").exists():
            raise RunDirError(f"{out / 'dataset.json'} exists; choose another folder")
        datalist = write_phantom(out, cases_per_site, unlabeled_per_site, seed)
    console.print(f"phantom written: {datalist}", highlight=False, soft_wrap=True)


@app.command()
def train(
    data: DataOption,
    out: OutOption,
    model: Annotated[Optional[str], typer.Option(help="Registry model name (see `prokd models`).", show_default=from_config(DEFAULTS.model.name))] = None,
    config: ConfigOption = None,
    sites: SitesOption = None,
    cases: CasesOption = None,
    epochs: EpochsOption = None,
    minutes: MinutesOption = None,
    seed: SeedOption = None,
    label_map: LabelMapOption = None,
    channel: ChannelOption = None,
    unlabeled: UnlabeledOption = None,
    set_: SetOption = [],
    split: SplitOption = None,
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Train a segmentation network with Dice + Lovász + CE loss; writes a self-describing RUN folder.

    Data-parallel over N processes: torchrun --nproc-per-node N -m prokd train ...
    """
    flags = {
        "model.name": model,
        "preprocess.channel": channel,
        **common_flags(sites, cases, epochs, minutes, seed, label_map, unlabeled),
    }
    run_training(data, out, config, flags, set_, resume, overwrite, split, device=device)


@app.command("train-teachers")
def train_teachers(
    data: DataOption,
    out: Annotated[Path, typer.Option(callback=absolute_path, help="Folder for the teachers' RUN folders and teachers.json.")],
    by: Annotated[str, typer.Option(help="'site' (one teacher per site), 'cases:K' (disjoint K-case subsets) or 'folds:K' (the K training sets of a cross-validation).")],
    model: Annotated[Optional[str], typer.Option(help="Registry model name of the teachers.", show_default=from_config(DEFAULTS.model.name))] = None,
    config: ConfigOption = None,
    minutes: MinutesOption = None,
    epochs: EpochsOption = None,
    seed: SeedOption = None,
    jobs: Annotated[int, typer.Option(help="Teachers trained in parallel (threads are shared).")] = 1,
    set_: SetOption = [],
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier train-teachers folder (any other folder is refused).")] = False,
) -> None:
    """Train limit-trained teachers, each on one small subset of the training cases."""
    from prokd.train.teachers import train_teachers as train_all

    flags = {"model.name": model, **common_flags(None, None, epochs, minutes, seed, None)}
    with user_errors():
        run_config = resolve_config(config, flags, set_)
        records = train_all(data, out, run_config, by, jobs=jobs, overwrite=overwrite)
    console.print(teachers_table(records, by))


def teachers_table(records: list[dict[str, Any]], by: str) -> FittedTable:
    """The ``teachers.json`` records: name, training cases, validation Dice, minutes."""
    table = FittedTable(title=f"teachers by {by} (validation on cases none of them saw)")
    for column in ("teacher", "train cases", "val Dice", "minutes"):
        table.add_column(column, justify="left" if column == "teacher" else "right")
    for record in records:
        table.add_row(record["name"], str(len(record["train_cases"])), f"{record['val_dice']:.3f}", str(record["train_minutes"]))
    return table


@app.command()
def distill(
    data: DataOption,
    out: OutOption,
    teacher: Annotated[list[Path], typer.Option(callback=absolute_path, help="Teacher RUN folder (repeat for several), or a folder of them.")] = [],
    student: Annotated[Optional[str], typer.Option(help="Registry model name of the student.", show_default=from_config(DEFAULTS.model.name))] = None,
    aggregate: Annotated[Optional[str], typer.Option(help="Multi-teacher aggregation: mean, weighted, site, trust, adaptive, entropy, confidence-max, agreement, learned.", show_default=from_config(DistillConfig.aggregate))] = None,
    config: ConfigOption = None,
    sites: SitesOption = None,
    cases: CasesOption = None,
    epochs: EpochsOption = None,
    minutes: MinutesOption = None,
    seed: SeedOption = None,
    label_map: LabelMapOption = None,
    channel: ChannelOption = None,
    unlabeled: UnlabeledOption = None,
    no_labels: Annotated[bool, typer.Option("--no-labels", help="Learn from no label (config key distill.no_labels): KD terms only, on the images of --sites, those of its labeled cases included, which are the test cases; best.pt is the last epoch.")] = False,
    set_: SetOption = [],
    split: SplitOption = None,
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Distil frozen teacher(s) into a student: Dice + Lovász + CE on labels, KL + feature terms on teachers.

    Refused before anything trains when a teacher was trained on a validation or test case of the student's split. With --no-labels (a site without labels, taught by teachers of other sites) no label reaches training or the choice of the checkpoint. Data-parallel over N processes: torchrun --nproc-per-node N -m prokd distill ...
    """
    flags = {
        "model.name": student,
        "distill.teachers": [str(t) for t in teacher] or None,
        "distill.aggregate": aggregate,
        "distill.no_labels": True if no_labels else None,
        "preprocess.channel": channel,
        **common_flags(sites, cases, epochs, minutes, seed, label_map, unlabeled),
    }
    run_training(data, out, config, flags, set_, resume, overwrite, split, needs_teacher=True, device=device)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(callback=absolute_path, help="RUN folder, checkpoint file or .onnx file from `prokd export`.")],
    data: Annotated[Path, typer.Option(callback=absolute_path, help="The dataset the run was trained on (or another with the same case ids).")],
    split: Annotated[str, typer.Option(help="train, val, test, or all labeled cases.")] = "test",
    which: Annotated[str, typer.Option(help="Checkpoint: best or last.")] = "best",
    cases: Annotated[bool, typer.Option(help="Also print the per-case table.")] = False,
    label_map: Annotated[Optional[str], typer.Option(help="Map label values to {0,1}, e.g. '1:1,2:1' (default: the run's).")] = None,
    channel: ChannelOption = None,
) -> None:
    """Per-case Dice, IoU, HD95, ASSD in 3D; per-site and overall mean ± sd; CSV + JSON in RUN/eval/."""
    from prokd.eval.evaluate import evaluate_run, print_cases, summary_table

    with user_errors():
        evaluation = evaluate_run(run, data, split=split, which=which, label_map=parse_label_map(label_map), channel=channel,
                                  threads=default_threads())
    if cases:
        print_cases(evaluation, console)
    console.print(summary_table(evaluation, title=f"{run} — {split} split"))


@app.command()
def calibrate(
    run: Annotated[Path, typer.Argument(callback=absolute_path, help="RUN folder.")],
    data: Annotated[Path, typer.Option(callback=absolute_path, help="The dataset the run was trained on (or another with the same case ids).")],
) -> None:
    """Temperature scaling: fit the temperature that makes the run's probabilities honest on its validation cases.

    Writes RUN/calibration.json (temperature, NLL and reliability before and after), which `distill.calibrate` reads. Masks do not change.
    """
    from prokd.eval.calibration import CALIBRATION_FILE, calibrate_run, calibration_table

    with user_errors():
        calibration = calibrate_run(run, data)
    console.print(f"{run}: temperature {calibration.temperature:.3f}, fitted on {counted(len(calibration.cases), 'validation case')} "
                  f"({calibration.voxels:,} voxels of gland slices); written to {run / CALIBRATION_FILE}", highlight=False)
    console.print(calibration_table(calibration))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(callback=absolute_path, help="RUN folder, checkpoint file or .onnx file from `prokd export`.")],
    inputs: Annotated[list[Path], typer.Argument(callback=absolute_path, help="Volume files or folders of volumes.")],
    out: Annotated[Path, typer.Option(callback=absolute_path, help="Folder for the masks.")],
    probability: Annotated[bool, typer.Option(help="Also write the foreground probability map.")] = False,
    uncertainty: Annotated[bool, typer.Option(help="Also write the entropy map (and, for a multi-teacher RUN, the teachers' disagreement) and print a score per volume.")] = False,
    review_above: Annotated[float, typer.Option(help="Flag a volume for review when its uncertainty score exceeds this.")] = REVIEW_ABOVE,
    flip_tta: Annotated[Optional[bool], typer.Option("--flip-tta/--no-flip-tta", help="Average the prediction with that of the left-right mirror image (twice the network's time).", show_default="the run's postprocess.flip_tta")] = None,
    relocate: Annotated[Optional[int], typer.Option(min=0, help="Locate-then-segment passes: predict again on a box around the gland when it appears larger or smaller than in training (a tighter or wider field of view); 0: off.", show_default="the run's postprocess.relocate")] = None,
    framings: Annotated[Optional[str], typer.Option(help="Zooms about the image centre to make the first prediction at, keeping the most confident, e.g. 0.5,0.7,1,1.5,2 for a field of view of unknown width (one prediction each).", show_default="the run's postprocess.framings")] = None,
    which: Annotated[str, typer.Option(help="Checkpoint: best or last.")] = "best",
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
    channel: ChannelOption = None,
) -> None:
    """Segment whole volumes; masks keep the input's format, axis order and geometry.

    Every input is read and checked before the first mask is written: one bad file stops the batch with nothing written.
    """
    from prokd.infer.predict import Predictor, check_inputs, check_outputs, predict_file, written_maps

    with user_errors():
        files = expand_inputs(inputs)
        if run.suffix == ".onnx":
            from prokd.infer.export import load_onnx_predictor

            predictor = load_onnx_predictor(run, default_threads())
        else:
            predictor = Predictor.from_checkpoint(run, which)
        if flip_tta is not None:
            predictor.postprocess = dataclasses.replace(predictor.postprocess, flip_tta=flip_tta)
        if relocate is not None:
            predictor.postprocess = dataclasses.replace(predictor.postprocess, relocate=relocate)
        if framings is not None:
            predictor.postprocess = dataclasses.replace(predictor.postprocess, framings=parse_framings(framings))
        if predictor.postprocess.relocate:
            predictor.gland_extents()  # a run trained before locate-then-segment: refused before any output
        teachers = distillation_teachers(run) if uncertainty else []
        check_outputs(files, out, written_maps(probability, uncertainty, bool(teachers)), overwrite)
        check_inputs(predictor, files, predictor.input_channel(channel))
        out.mkdir(parents=True, exist_ok=True)
        for path in files:
            written = predict_file(predictor, path, out, save_probability=probability, overwrite=overwrite,
                                   channel=channel, uncertainty=uncertainty, teachers=teachers)
            console.print(f"{path} → {written.mask}{uncertainty_note(written, review_above)}", highlight=False,
                          soft_wrap=True)


def distillation_teachers(run: Path) -> list[Any]:
    """Predictors of a multi-teacher RUN's teachers, for their disagreement; none for other runs (one teacher does
    not disagree with itself) or when a teacher is gone (said on the console)."""
    from prokd.infer.predict import Predictor
    from prokd.infer.uncertainty import teacher_runs

    if not run.is_dir():
        return []
    try:
        runs = teacher_runs(run)
    except FileNotFoundError as error:
        console.print(f"no teachers' disagreement: {error}", highlight=False, soft_wrap=True)
        return []
    return [Predictor.from_checkpoint(teacher) for teacher in runs] if len(runs) > 1 else []


def uncertainty_note(written: Any, review_above: float) -> str:
    """``  uncertainty 0.123 (teachers disagree 0.045)  REVIEW`` for a volume predicted with uncertainty, else ``""``."""
    if written.uncertainty is None:
        return ""
    note = f"  uncertainty {written.uncertainty:.3f}"
    if written.disagreement is not None:
        note += f" (teachers disagree {written.disagreement:.3f})"
    return note + ("  REVIEW" if written.uncertainty > review_above else "")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(callback=absolute_path, help="RUN folder or checkpoint file.")],
    out: Annotated[Path, typer.Option(callback=absolute_path, help="Target .onnx file.")],
    which: Annotated[str, typer.Option(help="Checkpoint: best or last.")] = "best",
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
    int8: Annotated[bool, typer.Option(help="Quantise to int8 (static, QDQ), calibrated on the run's training slices.")] = False,
    data: Annotated[Optional[Path], typer.Option(callback=absolute_path, help="Dataset for the int8 calibration.", show_default="the run's training data")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Export the network to ONNX (preprocessing kept as metadata) and check it against PyTorch with ONNX Runtime."""
    from prokd.infer.export import export_onnx

    threads = default_threads()
    with user_errors():
        result = export_onnx(run, out, which=which, opset=opset, overwrite=overwrite, threads=threads, int8=int8,
                             data=data)
    quantization = result.quantization
    if quantization is not None:
        console.print(f"int8: {quantization['method']}"
                      + (f" (static failed: {quantization['static_error']})" if "static_error" in quantization else
                         f", calibrated on {quantization['calibration_slices']} training slices"),
                      highlight=False, soft_wrap=True)
    console.print(
        f"{result.path}: max |ONNX − PyTorch| = {result.max_abs_diff:.1e}; one slice: "
        f"PyTorch {result.torch_ms:.1f} ms, ONNX Runtime {result.onnx_ms:.1f} ms ({threads} threads)",
        highlight=False, soft_wrap=True,
    )


@app.command()
def benchmark(
    models: Annotated[list[Path], typer.Argument(callback=absolute_path, help="RUN folders, checkpoints or .onnx files; speed-ups are against the first.")],
    engine: Annotated[list[str], typer.Option(help="torch, onnx or onnx-int8, for RUN folders; repeat for several.")] = ["torch"],  # noqa: B006
    threads: Annotated[Optional[int], typer.Option(min=1, help="Threads of every engine.", show_default="the cores available")] = None,
    size: Annotated[Optional[int], typer.Option(min=16, help="Grid side S of every model.", show_default="each model's own")] = None,
    volume: Annotated[Optional[Path], typer.Option(callback=absolute_path, help="Volume file to time.", show_default="a 24 x 256 x 256 phantom")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds; every round runs every timing of every model once.")] = 20,
    json_out: Annotated[Optional[Path], typer.Option("--json", callback=absolute_path, help="Also write the results as JSON.")] = None,
) -> None:
    """Size, MACs and CPU latency per slice and per whole volume (parts apart) of every model on every engine,
    timed together in one process with interleaved repeats; medians, 10th-90th percentiles, speed-ups."""
    from prokd.infer.benchmark import benchmark as run_benchmark
    from prokd.infer.benchmark import benchmark_volume, load_candidates, slice_table, temporary_workdir, volume_table
    from prokd.infer.predict import read_input

    threads = threads or default_threads()
    with user_errors(), temporary_workdir() as workdir:
        if json_out is not None and json_out.exists():
            raise FileExistsError(f"{json_out}: already exists (choose another --json file)")
        candidates = load_candidates([shown_path(model) for model in models], engine, threads, Path(workdir), size)
        if volume is None:
            image, spacing = benchmark_volume()
        else:
            canonical, image = read_input(volume, candidates[0].predictor.input_channel())
            spacing = canonical.geometry.spacing
        console.print(f"timing {len(candidates)} model(s) together: {repeats} rounds, {threads} thread(s), "
                      f"volume {' x '.join(map(str, image.shape))}", highlight=False, soft_wrap=True)
        rows = run_benchmark(candidates, image, spacing, threads=threads, repeats=repeats)
    for title, (header, cells) in (("one slice, batch 1", slice_table(rows)), ("whole volume", volume_table(rows))):
        table = FittedTable(title=title)
        for number, name in enumerate(header):
            table.add_column(name, justify="left" if number < 2 else "right")
        for line in cells:
            table.add_row(*line)
        console.print(table)
    console.print("ms: medians; speed-up: the first model's median over this one's; volume: preprocessing, network "
                  "and post-processing, without file reading", highlight=False)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(rows, indent=2))


def shown_path(path: Path) -> Path:
    """``path`` relative to the working folder when it lies inside it (shorter in tables), else as it is."""
    relative = Path(os.path.relpath(path))
    return path if relative.parts[:1] == ("..",) else relative


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders as their supported volume files (sorted); an error for anything else."""
    from prokd.data.io import SUPPORTED_SUFFIXES, volume_suffix

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith(SUPPORTED_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{path}: no volume files ({', '.join(SUPPORTED_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            volume_suffix(path)
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


@app.command()
def models() -> None:
    """List the registered networks with their parameter counts and default feature taps."""
    from prokd.eval.efficiency import count_parameters
    from prokd.models import build_model, list_models

    table = FittedTable(title="model registry")
    for column in ("name", "params", "feature taps", "description"):
        table.add_column(column, justify="right" if column == "params" else "left", wrap=column in ("feature taps", "description"))
    for spec in list_models():
        params = count_parameters(build_model(spec.name))
        table.add_row(spec.name, f"{params / 1e6:.2f} M", ", ".join(spec.default_taps), spec.description)
    console.print(table)


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(callback=absolute_path, help="Experiment YAML (see configs/experiment_phantom.yaml).")],
    out: Annotated[Path, typer.Option(callback=absolute_path, help="Experiment folder: runs/, plan.json, results/.")],
    dry_run: Annotated[bool, typer.Option(help="Print the plan and each stage's status; train nothing.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT when it holds an earlier experiment, e.g. a different one (any other folder is refused).")] = False,
    stage: Annotated[list[str], typer.Option(help="Train only this stage (name or shell pattern, e.g. 'teacher-*'; repeat for several), e.g. one per cluster job.", show_default="every stage")] = [],
    device: DeviceOption = "auto",
) -> None:
    """Teachers, students from scratch, single- and multi-teacher KD over seeds: accuracy against size and speed.

    Rerunning the same command skips finished stages and resumes an interrupted one. Several workers may run the same command on one folder (a lock per stage): each trains the stages no other worker holds.
    """
    from prokd.experiment import load_experiment, run_experiment, verdict_lines

    with user_errors():
        results = run_experiment(load_experiment(config), out, dry_run=dry_run, overwrite=overwrite, console=console,
                                 stages=stage, device=device)
    if not dry_run:
        console.print(f"results → {out / 'results'} (results.md, results.csv, results.json)", highlight=False,
                      soft_wrap=True)
        console.print("\n[bold]verdict[/bold]")
        for line in verdict_lines(results):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def import_report_writer():
    """:func:`prokd.report.page.write_report`, or one red line and exit 1 when matplotlib (the optional 'report'
    extra) is missing."""
    try:
        from prokd.report.page import write_report
    except ModuleNotFoundError as err:
        error_console.print(f"[red]error:[/red] {err.name} is not installed; pip install 'prokd[report]'", highlight=False)
        raise typer.Exit(1) from None
    return write_report


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(callback=absolute_path, help="Experiment folder written by `prokd experiment`.")],
    check: Annotated[bool, typer.Option(help="Open the page in headless chromium: broken images, tables wider than the page, whole-page screenshot.")] = False,
) -> None:
    """Write DIR/report/: a self-contained index.html, report.md and figures/*.png; print the page's path."""
    from prokd.report.browser import check_page

    write_report = import_report_writer()
    with user_errors():
        index = write_report(directory)
        checked = check_page(index, index.parent / "screenshot.png") if check else None
    console.print(str(index), highlight=False, soft_wrap=True)
    if checked is not None:
        summary = (
            f"{checked.images} images, {checked.broken} broken; {checked.overflowing} tables wider than the page; "
            f"screenshot of the whole page ({checked.height} px tall): {checked.screenshot}"
        )
        console.print(summary, highlight=False, soft_wrap=True)
        if checked.broken or checked.overflowing:
            raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(callback=absolute_path, help="Folder for the phantom and the experiment.")] = Path("prokd-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the phantom, the split and every training run.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in OUT (nothing else is ever deleted).")] = False,
) -> None:
    """Phantom → teachers (one on all cases, two limit-trained) → students (from scratch, KD, multi-teacher KD) →
    results, report and a one-line verdict per comparison, in about 5 minutes on 2 cores (budgets are optimiser steps)."""
    import_report_writer()  # fails before anything trains when matplotlib is missing
    from prokd.demo import run_demo, steps_scale_from_environment

    with user_errors():
        run_demo(out, overwrite=overwrite, seed=seed, steps_scale=steps_scale_from_environment(), console=console)
