"""The teachers' ensemble at test time: several runs as one model, the mean of their foreground probabilities.

The reference a multi-teacher student is measured against besides its best teacher: what the teachers reach
together when every one of them segments every volume (K networks at test time, against the student's one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prokd.eval.evaluate import Evaluation, evaluate_predictor
from prokd.infer.postprocess import probability_to_mask
from prokd.infer.predict import Prediction, Predictor

ENSEMBLE_EVAL = "teachers-ensemble"
"""``RUN/eval/<this>/``: where a distilled run's teachers' ensemble on the run's test cases is written."""


def teacher_eval(teacher: str) -> str:
    """``RUN/eval/<this>/``: where a distilled run's teacher (its RUN folder's name) is evaluated on the run's test
    cases, when it was tested on other cases itself."""
    return f"teacher-{teacher}"


class Ensemble:
    """Predictors as one: the mean of their foreground probabilities on the volume's own grid (each member with its
    own preprocessing and flip test-time augmentation), post-processed as the first member post-processes.

    Args:
        members: the predictors averaged (at least one).
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.postprocess = self.members[0].postprocess

    def input_channel(self, override: int | None = None) -> int | None:
        """The channel read from multi-channel volumes: ``override``, else the first member's."""
        return self.members[0].input_channel(override)

    def predict(self, image: np.ndarray, spacing: tuple[float, float, float] | None) -> Prediction:
        """Segment a raw volume ``(Z, Y, X)`` (canonical orientation): ``probability`` ``(Z, Y, X)`` float32, the
        members' mean, and its ``mask`` ``(Z, Y, X)`` uint8."""
        probability = np.mean([member.predict(image, spacing).probability for member in self.members], axis=0)
        probability = probability.astype(np.float32)
        return Prediction(probability, probability_to_mask(probability, self.postprocess))


def evaluate_ensemble(
    runs: Sequence[str | Path], data: str | Path, case_ids: Sequence[str], label_map: dict[int, int] | None = None
) -> Evaluation:
    """Score the ensemble of the best checkpoints of ``runs`` on the labeled cases ``case_ids`` of ``data``
    (split ``"test"``), with ``label_map`` mapping their labels to {0, 1}."""
    ensemble = Ensemble([Predictor.from_checkpoint(run) for run in runs])
    return evaluate_predictor(ensemble, data, "test", {"test": list(case_ids)}, label_map, None, Path(runs[0]))
