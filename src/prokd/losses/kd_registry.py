"""Feature-distillation terms by name: the :class:`FeatureTerm` base, its registry, and tap pairing.

A feature term compares paired intermediate maps of a student and a teacher (collected with
:func:`prokd.models.forward_with_features`). Each term is one module defining a :class:`FeatureTerm`
subclass decorated with :func:`register_feature_term`; importing :mod:`prokd.losses` imports every term
module, which fills the registry:

============  ==============================================================  ==========================
name          compares                                                        trainable parameters
============  ==============================================================  ==========================
hint          adapted student maps with teacher maps (FitNets)                one 1x1 conv per pair
attention     spatial attention maps (attention transfer)                     none
affinity      pixel-pair cosine similarities (structured distillation)        none
============  ==============================================================  ==========================

Students and teachers may tap a different number of maps at different resolutions;
:func:`pair_features` chooses which student tap is compared with which teacher tap.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["FeatureTerm", "build_feature_term", "feature_terms", "pair_features", "register_feature_term"]

TermClass = TypeVar("TermClass", bound=type["FeatureTerm"])


class FeatureTerm(nn.Module, ABC):
    """The mean over pairs of maps of a per-pair distillation loss.

    Subclasses implement :meth:`pair_loss` and take their hyper-parameters as keyword-only arguments after
    the two channel lists.

    Args:
        student_channels: channels ``C_l`` of each student map, in pair order.
        teacher_channels: channels of the teacher map paired with each student map.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        if not student_channels or len(student_channels) != len(teacher_channels):
            raise ValueError(
                f"{type(self).__name__}: need the same nonzero number of student and teacher channels, "
                f"got {list(student_channels)} and {list(teacher_channels)}"
            )
        self.student_channels = tuple(int(c) for c in student_channels)
        self.teacher_channels = tuple(int(c) for c in teacher_channels)

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean of :meth:`pair_loss` over the pairs; teacher maps are detached, so only the student (and the
        term's own parameters) receive gradients.

        Args:
            student_feats: student maps ``(B, C_l, H_l, W_l)``, one per pair.
            teacher_feats: the paired teacher maps ``(B, C'_l, H'_l, W'_l)``; channels and spatial size may
                differ from the student's.

        Returns:
            Scalar tensor.
        """
        self._check_maps(student_feats, teacher_feats)
        losses = [
            self.pair_loss(index, student, teacher.detach())
            for index, (student, teacher) in enumerate(zip(student_feats, teacher_feats))
        ]
        return torch.stack(losses).mean()

    @abstractmethod
    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Scalar loss of pair ``index``: student ``(B, C_l, H_l, W_l)`` against teacher ``(B, C'_l, H'_l, W'_l)``."""

    def _check_maps(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> None:
        name = type(self).__name__
        if len(student_feats) != len(self.student_channels) or len(teacher_feats) != len(self.teacher_channels):
            raise ValueError(
                f"{name}: built for {len(self.student_channels)} pairs, got {len(student_feats)} student and "
                f"{len(teacher_feats)} teacher maps"
            )
        pairs = zip(student_feats, teacher_feats, self.student_channels, self.teacher_channels)
        for index, (student, teacher, student_c, teacher_c) in enumerate(pairs):
            if student.ndim != 4 or teacher.ndim != 4 or student.shape[0] != teacher.shape[0]:
                raise ValueError(
                    f"{name}: pair {index} maps must be (B, C, H, W) with the same B, "
                    f"got {tuple(student.shape)} and {tuple(teacher.shape)}"
                )
            if (student.shape[1], teacher.shape[1]) != (student_c, teacher_c):
                raise ValueError(
                    f"{name}: pair {index} has {student.shape[1]} student and {teacher.shape[1]} teacher channels, "
                    f"built for {student_c} and {teacher_c}"
                )


_FEATURE_TERMS: dict[str, type[FeatureTerm]] = {}


def register_feature_term(name: str) -> Callable[[TermClass], TermClass]:
    """Class decorator registering a :class:`FeatureTerm` subclass under ``name``; returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered.
        TypeError: the class is not a :class:`FeatureTerm`.
    """

    def decorate(term_class: TermClass) -> TermClass:
        if name in _FEATURE_TERMS:
            raise ValueError(f"feature term '{name}' is already registered")
        if not issubclass(term_class, FeatureTerm):
            raise TypeError(f"feature term '{name}': {term_class.__name__} is not a FeatureTerm")
        _FEATURE_TERMS[name] = term_class
        return term_class

    return decorate


def feature_terms() -> list[str]:
    """Names of the registered feature terms, sorted."""
    return sorted(_FEATURE_TERMS)


def build_feature_term(
    name: str, student_channels: Sequence[int], teacher_channels: Sequence[int], **kwargs: Any
) -> FeatureTerm:
    """Build the registered feature term ``name`` for pairs of maps with these channels.

    Args:
        name: registry name (see :func:`feature_terms`).
        student_channels: channels of each student map, in pair order.
        teacher_channels: channels of the paired teacher maps.
        kwargs: the term's hyper-parameters, e.g. ``grid=8`` for ``affinity``.

    Raises:
        ValueError: unknown name, or a keyword the term does not accept (both listed in the message).
    """
    if name not in _FEATURE_TERMS:
        raise ValueError(f"unknown feature term '{name}'; registered feature terms: {', '.join(feature_terms())}")
    term_class = _FEATURE_TERMS[name]
    parameters = inspect.signature(term_class.__init__).parameters.values()
    accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"feature term '{name}' does not accept {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    return term_class(student_channels, teacher_channels, **kwargs)


def pair_features(
    student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]
) -> list[tuple[int, int]]:
    """Pair student taps with teacher taps of the nearest spatial resolution, each teacher tap at most once.

    Both networks see the same input, so the tap sizes ``H x W`` are comparable directly; the distance of
    two taps is ``|log2(H W) - log2(H' W')|`` (one halving of both sides is a distance of 2). Every student
    tap picks its nearest teacher tap (the shallower one on a tie); when several student taps pick the same
    teacher tap, only the nearest of them (again the shallower on a tie) keeps it and the others stay
    unpaired. Since taps are listed shallowest first at decreasing resolution, the pairs never cross:
    deeper student taps go with deeper teacher taps. For example, four student taps at 1/2 ... 1/16 and
    three teacher taps at 1/2 ... 1/8 give ``[(0, 0), (1, 1), (2, 2)]``.

    Args:
        student_shapes: shape of each student tap, ending in ``(H, W)``: ``(C, H, W)`` as from
            :func:`prokd.models.tap_channels`, or a map's full ``(B, C, H, W)``.
        teacher_shapes: the same for the teacher taps.

    Returns:
        ``(student_index, teacher_index)`` pairs in increasing student index.
    """
    if not student_shapes or not teacher_shapes:
        raise ValueError("pair_features: need at least one student and one teacher tap")
    student_sizes = [_log_area(shape) for shape in student_shapes]
    teacher_sizes = [_log_area(shape) for shape in teacher_shapes]
    claims: dict[int, tuple[float, int]] = {}
    for student_index, student_size in enumerate(student_sizes):
        distances = [abs(student_size - teacher_size) for teacher_size in teacher_sizes]
        teacher_index = min(range(len(distances)), key=distances.__getitem__)
        claim = (distances[teacher_index], student_index)
        claims[teacher_index] = min(claims.get(teacher_index, claim), claim)
    return sorted((student_index, teacher_index) for teacher_index, (_, student_index) in claims.items())


def _log_area(shape: Sequence[int]) -> float:
    if len(shape) < 2 or shape[-1] < 1 or shape[-2] < 1:
        raise ValueError(f"pair_features: a tap shape must end in a positive (H, W), got {tuple(shape)}")
    return math.log2(shape[-2] * shape[-1])
