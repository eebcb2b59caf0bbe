"""Whole-volume prediction: volume → canonical orientation → network grid → slice-wise network → back → mask.

A :class:`Predictor` is built from a checkpoint alone (model name, arguments, weights and preprocessing, the
input channel included, travel in it), so a RUN folder is all a user needs to segment new volumes. Files are
read in the canonical orientation of :mod:`prokd.data.orientation`, like the training cases, and results are
written back in the file's own axis order and geometry.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prokd.config import PostprocessConfig, PreprocessConfig
from prokd.data.io import VolumeError, non_finite_problem, volume_suffix, write_volume
from prokd.data.orientation import CanonicalVolume, read_canonical
from prokd.data.preprocess import GridPlan, Preprocessor
from prokd.data.slices import volume_inputs
from prokd.distributed import device_of
from prokd.memory import PREDICTION_BYTES_PER_VOXEL, available_memory, format_bytes, layer_output_bytes
from prokd.infer.framing import centred_plan, framing_confidence, gland_box, reframed_plan
from prokd.infer.postprocess import probability_to_mask
from prokd.infer.uncertainty import binary_entropy, disagreement, disagreement_score, entropy_score
from prokd.losses import foreground_logit, probabilities
from prokd.runs.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    postprocess_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)


@dataclass
class Prediction:
    """``probability`` ``(Z, Y, X)`` float32 foreground probability and ``mask`` ``(Z, Y, X)`` uint8."""

    probability: np.ndarray
    mask: np.ndarray


class Predictor:
    """Segments whole volumes with a trained 2D network.

    Args:
        model: network mapping ``(B, C, S, S)`` to logits ``(B, 1 or 2, S, S)``.
        preprocess: the preprocessing the model was trained with.
        postprocess: threshold, largest component and flip test-time augmentation.
        batch_size: slices per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: PreprocessConfig,
        postprocess: PostprocessConfig | None = None,
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval()
        self.preprocessor = Preprocessor(preprocess)
        self.context = preprocess.context
        self.postprocess = postprocess or PostprocessConfig()
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, run_or_file: str | Path, which: str = "best") -> Predictor:
        path = resolve_checkpoint(run_or_file, which)
        return cls.from_payload(load_checkpoint(path), path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "checkpoint") -> Predictor:
        """A predictor from an already loaded checkpoint dict (read from ``source``)."""
        return cls(
            model_from_checkpoint(payload, source),
            preprocess_from_checkpoint(payload),
            postprocess_from_checkpoint(payload),
        )

    @torch.inference_mode()
    def grid_probability(self, grid_image: np.ndarray, flip_tta: bool | None = None) -> np.ndarray:
        """Foreground probability ``(Z, S, S)`` for a volume ``(Z, S, S)`` already on the canonical grid.

        Slices go through the network ``batch_size`` at a time; with flip test-time augmentation (``flip_tta``,
        default: the post-processing config's), each batch holds half as many slices plus their left-right
        mirror images, and the two probabilities are averaged.
        """
        flip = self.postprocess.flip_tta if flip_tta is None else flip_tta
        inputs = torch.from_numpy(volume_inputs(grid_image, self.context)).to(device_of(self.model))
        step = max(1, self.batch_size // 2) if flip else self.batch_size
        chunks = []
        for start in range(0, len(inputs), step):
            batch = inputs[start : start + step]
            if flip:
                prob = probabilities(self.model(torch.cat([batch, batch.flip(-1)])))
                prob = (prob[: len(batch)] + prob[len(batch) :].flip(-1)) / 2
            else:
                prob = probabilities(self.model(batch))
            chunks.append(prob[:, 0])
        return torch.cat(chunks).cpu().numpy()

    @torch.inference_mode()
    def grid_logit(self, grid_image: np.ndarray) -> np.ndarray:
        """Foreground log-odds ``(Z, S, S)`` float32 for a volume ``(Z, S, S)`` on the canonical grid, without
        test-time augmentation: what temperature scaling (:mod:`prokd.eval.calibration`) divides."""
        inputs = torch.from_numpy(volume_inputs(grid_image, self.context)).to(device_of(self.model))
        chunks = [foreground_logit(self.model(inputs[start : start + self.batch_size]))[:, 0]
                  for start in range(0, len(inputs), self.batch_size)]
        return torch.cat(chunks).float().cpu().numpy()

    def memory_needed(self, voxels: int) -> int:
        """Upper estimate of the bytes predicting a volume of ``voxels`` voxels holds at its peak: the volume's
        arrays (:data:`~prokd.memory.PREDICTION_BYTES_PER_VOXEL`) and the network's layer outputs for one chunk
        of slices (not counted for an ONNX model)."""
        return PREDICTION_BYTES_PER_VOXEL * voxels + self.batch_size * self._slice_output_bytes

    @functools.cached_property
    def _slice_output_bytes(self) -> int:
        """The network's layer outputs for one slice (0 for a model without parameters: ONNX Runtime's own)."""
        if next(self.model.parameters(), None) is None:
            return 0
        size = self.preprocessor.config.size
        return layer_output_bytes(self.model, (1, self.preprocessor.config.in_channels, size, size))

    def input_channel(self, override: int | None = None) -> int | None:
        """The channel read from multi-channel volumes: ``override``, else the one the model was trained on."""
        return self.preprocessor.config.channel if override is None else override

    def predict_grid(self, grid_image: np.ndarray, plan: GridPlan, flip_tta: bool | None = None) -> Prediction:
        """Predict a preprocessed volume and map the result back to its original grid."""
        return self.finish(self.grid_probability(grid_image, flip_tta), plan)

    def finish(self, grid_probability: np.ndarray, plan: GridPlan) -> Prediction:
        """Post-processing: grid probabilities ``(Z, S, S)`` mapped back to the volume's grid, thresholded and
        reduced to the largest component as configured."""
        probability = self.preprocessor.grid_to_volume(grid_probability, plan)
        return Prediction(probability, probability_to_mask(probability, self.postprocess))

    def prepare(self, image: np.ndarray, spacing: tuple[float, float, float] | None) -> tuple[np.ndarray, GridPlan]:
        """Preprocessing: a raw volume ``(Z, Y, X)`` on the canonical grid ``(Z, S, S)``, with its grid plan."""
        plan = self.preprocessor.plan(image.shape, spacing)
        return self.preprocessor.image_to_grid(image, plan), plan

    def predict(
        self, image: np.ndarray, spacing: tuple[float, float, float] | None, flip_tta: bool | None = None
    ) -> Prediction:
        """Segment a raw volume ``(Z, Y, X)``, axial slices along axis 0 (canonical orientation), with the given
        spacing (or None when unknown); ``flip_tta`` overrides the post-processing config's.

        With several ``postprocess.framings`` the first prediction is the most confident of those made at each
        zoom about the image centre. With ``postprocess.relocate`` passes (:mod:`prokd.infer.framing`), each
        predicts again on a box framed around the gland the previous pass found if it appeared larger or smaller
        than in training. A gland of a training size ends them, and so does a pass that finds no gland (its
        prediction is dropped)."""
        normalized = self.preprocessor.normalize(image)
        prediction, plan = self._first_pass(normalized, self.preprocessor.plan(image.shape, spacing), flip_tta)
        for _ in range(self.postprocess.relocate):
            box = gland_box(prediction.mask)
            plan = None if box is None else reframed_plan(plan, box, self.gland_extents())
            if plan is None:
                break
            framed = self.predict_grid(self.preprocessor.normalized_to_grid(normalized, plan), plan, flip_tta)
            if not framed.mask.any():
                break
            prediction = framed
        return prediction

    def _first_pass(
        self, normalized: np.ndarray, plan: GridPlan, flip_tta: bool | None
    ) -> tuple[Prediction, GridPlan]:
        """The prediction of a normalised volume ``(Z, Y, X)`` at each of ``postprocess.framings`` (zooms of ``plan``
        about its centre) that the network is surest of (:func:`~prokd.infer.framing.framing_confidence`), with its
        plan."""
        best: tuple[float, Prediction, GridPlan] | None = None
        for zoom in self.postprocess.framings:
            framed = centred_plan(plan, zoom)
            prediction = self.predict_grid(self.preprocessor.normalized_to_grid(normalized, framed), framed, flip_tta)
            confidence = framing_confidence(prediction.probability, prediction.mask)
            if best is None or confidence > best[0]:
                best = (confidence, prediction, framed)
        return best[1], best[2]

    def gland_extents(self) -> tuple[float, float]:
        """The training range of gland extents that locate-then-segment reframes into.

        Raises:
            ValueError: the checkpoint does not carry it.
        """
        if self.postprocess.gland_extents is None:
            raise ValueError("postprocess.relocate needs postprocess.gland_extents, the training cases' range of "
                             "gland extents on the grid (runs trained, and .onnx files exported, since "
                             "locate-then-segment carry it)")
        return self.postprocess.gland_extents


OUTPUT_MAPS = ("mask", "prob", "entropy", "disagreement")
"""What predicting a file may write, each as ``<stem>_<name><suffix>``: the mask, the foreground probability, the
entropy map and the teachers' disagreement (:mod:`prokd.infer.uncertainty`)."""


def output_paths(image_path: Path, out_dir: Path, suffix: str | None = None) -> dict[str, Path]:
    """The file of each of :data:`OUTPUT_MAPS` for ``image_path`` in ``out_dir``, in the input's format by default."""
    suffix = suffix or volume_suffix(image_path)
    stem = image_path.name[: -len(volume_suffix(image_path))]
    stem = stem[:-5] if stem.endswith("_0000") else stem
    return {name: out_dir / f"{stem}_{name}{suffix}" for name in OUTPUT_MAPS}


def written_maps(probability: bool, uncertainty: bool, disagreement: bool) -> list[str]:
    """The names of :data:`OUTPUT_MAPS` that predicting with these options writes: always the mask."""
    chosen = {"prob": probability, "entropy": uncertainty, "disagreement": disagreement}
    return ["mask", *(name for name, wanted in chosen.items() if wanted)]


def check_outputs(image_paths: Sequence[Path], out_dir: Path, maps: Sequence[str], overwrite: bool) -> None:
    """Refuse, before anything is written, two inputs whose outputs in ``out_dir`` would have the same name (the same
    file name in different folders) and, without ``overwrite``, any of the ``maps`` (names of :data:`OUTPUT_MAPS`)
    that exists already.

    Raises:
        FileExistsError: naming the clashing inputs or the existing file.
    """
    written_by: dict[Path, Path] = {}
    for image_path in image_paths:
        paths = output_paths(image_path, out_dir)
        if paths["mask"] in written_by:
            raise FileExistsError(
                f"{image_path} and {written_by[paths['mask']]}: both would be written to {paths['mask']}; "
                "predict them into separate --out folders"
            )
        written_by[paths["mask"]] = image_path
        existing = [paths[name] for name in maps if paths[name].exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]}: already exists (use --overwrite to replace it)")


def read_input(image_path: Path, channel: int | None) -> tuple[CanonicalVolume, np.ndarray]:
    """``image_path`` read for prediction: the volume in the canonical orientation (``channel`` of a multi-channel
    one) and its image as float32.

    Raises:
        VolumeError: naming the file: unreadable (e.g. a truncated ``.nii.gz``), not one 3D channel, or with NaN
            or infinite voxels.
    """
    volume = read_canonical(image_path, channel)
    image = volume.array.astype(np.float32)
    problem = non_finite_problem(image)
    if problem:
        raise VolumeError(image_path, problem)
    return volume, image


def check_inputs(predictor: Predictor, image_paths: Sequence[Path], channel: int | None) -> None:
    """Read every input as :func:`predict_file` will (:func:`read_input`) and check that its prediction fits in
    memory (:func:`check_memory`) before anything is written, so that a batch with one bad file writes no mask
    at all. Each volume is read twice (here and when predicted), one at a time: a read is cheap next to a
    prediction, and a corrupt gzip shows only when its data are decompressed.

    Raises:
        VolumeError: for the first bad input, naming it and the problem.
    """
    for image_path in image_paths:
        _, image = read_input(image_path, channel)
        check_memory(predictor, image_path, image.shape)


def check_memory(predictor: Predictor, image_path: Path, shape: tuple[int, ...]) -> None:
    """Refuse a volume whose prediction would not fit in the memory available (:mod:`prokd.memory`).

    Raises:
        VolumeError: naming the file, its size, the memory it needs and the memory available.
    """
    available = available_memory()
    needed = predictor.memory_needed(int(np.prod(shape)))
    if available is not None and needed > available:
        raise VolumeError(
            image_path,
            f"{' x '.join(map(str, shape))} voxels need about {format_bytes(needed)} to predict; "
            f"{format_bytes(available)} is available",
        )


@dataclass
class PredictedFile:
    """What :func:`predict_file` wrote: the mask's path and, with uncertainty, the per-volume scores
    (:func:`~prokd.infer.uncertainty.entropy_score`, :func:`~prokd.infer.uncertainty.disagreement_score`)."""

    mask: Path
    uncertainty: float | None = None
    disagreement: float | None = None


def predict_file(
    predictor: Predictor,
    image_path: Path,
    out_dir: Path,
    save_probability: bool = False,
    overwrite: bool = False,
    channel: int | None = None,
    uncertainty: bool = False,
    teachers: Sequence[Predictor] = (),
) -> PredictedFile:
    """Segment one volume file; write its mask (and probability map) with the input's format, array shape and
    geometry.

    The volume is predicted in the canonical orientation and the results are mapped back to the file's own axis
    order. ``channel`` picks the channel of a multi-channel volume (default: the model's, see
    :meth:`Predictor.input_channel`). With ``uncertainty`` the entropy map is written too, and with ``teachers``
    their disagreement map (:mod:`prokd.infer.uncertainty`), both in the input's geometry.
    """
    maps = written_maps(save_probability, uncertainty, bool(teachers))
    check_outputs([image_path], out_dir, maps, overwrite)
    paths = output_paths(image_path, out_dir)
    volume, image = read_input(image_path, predictor.input_channel(channel))
    check_memory(predictor, image_path, image.shape)
    prediction = predictor.predict(image, volume.geometry.spacing)
    arrays: dict[str, np.ndarray] = {"mask": prediction.mask, "prob": prediction.probability.astype(np.float32)}
    result = PredictedFile(paths["mask"])
    if uncertainty:
        arrays["entropy"] = binary_entropy(prediction.probability)
        result.uncertainty = entropy_score(prediction.probability, arrays["entropy"])
    if teachers:
        probabilities = [teacher.predict(image, volume.geometry.spacing).probability for teacher in teachers]
        arrays["disagreement"] = disagreement(probabilities)
        result.disagreement = disagreement_score(probabilities, arrays["disagreement"])
    for name in maps:
        write_volume(paths[name], volume.to_stored(arrays[name]), volume.stored_geometry, overwrite=overwrite)
    return result
