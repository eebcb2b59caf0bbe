"""Strong photometric views of a batch of slices, pixel-aligned with it, for weak-to-strong consistency.

A strong view changes intensities only, never positions, so a network's prediction on it can be compared pixel
by pixel with its prediction on the slice itself (the weak view of FixMatch; Sohn et al., "FixMatch:
Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020; for segmentation Yang et
al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic Segmentation" (UniMatch), CVPR 2023).
Each sample gets, with strengths drawn uniformly between none and the configured maximum:

1. gamma: intensities mapped to [0, 1] (the sample's minimum to maximum), raised to ``γ`` (log-uniform in
   ``[1 / gamma, gamma]``), and multiplied by a smooth bias field ``exp(Σ c_k b_k(y, x))`` over the quadratic
   monomials ``y, x, y², xy, x²`` on ``[-1, 1]²`` (``|c_k| <= bias_field``), then mapped back;
2. contrast and brightness: ``x · (1 + a) + b`` with ``|a| <= contrast``, ``|b| <= brightness`` (in units of
   the normalised intensity);
3. blur: a Gaussian of standard deviation up to ``blur`` pixels (symmetric, so edges stay where they are);
4. noise: Gaussian, standard deviation up to ``noise``, independent per pixel and channel;
5. cutout: a square of side up to ``cutout`` of the slice's side, anywhere, set to 0 (the normalised mean
   intensity); those pixels are reported as not kept, so a loss can leave them out.

The channels of a sample (its 2.5D context slices, one scan) share the strengths, the bias field and the square.

The perturbation runs on the batch with torch operations: MONAI's intensity transforms work one sample at a time
and draw from numpy random states. Random numbers come from a torch generator, by default torch's global one,
which the training loop reseeds every epoch (:mod:`prokd.train.loop`), so a resumed run draws the same views.
Drawing (:meth:`PhotometricPerturbation.draw`) is separate from applying (:meth:`PhotometricPerturbation.apply`),
so that each process of a data-parallel run can draw for the unlabeled samples of the whole global batch, as a
single process does, and apply its own share (:meth:`PhotometricDraw.take`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["PhotometricDraw", "PhotometricPerturbation"]


@dataclass(frozen=True)
class PhotometricDraw:
    """The random part of the strong views of ``N`` samples of shape ``(C, H, W)``.

    Attributes:
        gamma: (N, 1, 1, 1) exponents.
        field: (N, 1, H, W) multiplicative bias fields.
        gain: (N, 1, 1, 1) contrast factors ``1 + a``.
        offset: (N, 1, 1, 1) brightness offsets ``b``.
        sigma: (N,) blur standard deviations in pixels.
        noise: (N, C, H, W) additive noise.
        cut: (N, 1, H, W) bool, True inside the cutout square.
    """

    gamma: torch.Tensor
    field: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    cut: torch.Tensor

    def take(self, rows: slice) -> PhotometricDraw:
        """The draws of the samples at ``rows``."""
        return PhotometricDraw(*(getattr(self, part.name)[rows] for part in fields(self)))


class PhotometricPerturbation:
    """``(N, C, H, W) -> (strong view (N, C, H, W), kept (N, 1, H, W) bool)``: intensity changes only, each drawn
    per sample up to its maximum (module docstring); a maximum of 0 (``gamma``: 1) switches a change off.

    Args:
        gamma: the exponent's largest factor away from 1, >= 1.
        bias_field: largest absolute coefficient of the bias field's log-quadratic.
        contrast: largest relative change of contrast, in [0, 1).
        brightness: largest intensity offset.
        blur: largest Gaussian standard deviation, in pixels.
        noise: largest noise standard deviation.
        cutout: largest side of the cutout square as a fraction of the slice's side, in [0, 1].
    """

    def __init__(
        self,
        gamma: float = 2.0,
        bias_field: float = 0.15,
        contrast: float = 0.25,
        brightness: float = 0.25,
        blur: float = 1.0,
        noise: float = 0.1,
        cutout: float = 0.4,
    ) -> None:
        if gamma < 1:
            raise ValueError(f"PhotometricPerturbation: gamma must be >= 1, got {gamma}")
        if not 0 <= contrast < 1:
            raise ValueError(f"PhotometricPerturbation: contrast must be in [0, 1), got {contrast}")
        if not 0 <= cutout <= 1:
            raise ValueError(f"PhotometricPerturbation: cutout must be in [0, 1], got {cutout}")
        negative = [name for name, value in (("bias_field", bias_field), ("brightness", brightness), ("blur", blur),
                                             ("noise", noise)) if value < 0]
        if negative:
            raise ValueError(f"PhotometricPerturbation: {', '.join(negative)} must be >= 0")
        self.gamma = gamma
        self.bias_field = bias_field
        self.contrast = contrast
        self.brightness = brightness
        self.blur = blur
        self.noise = noise
        self.cutout = cutout

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The strong views of ``x`` (N, C, H, W) and the pixels they keep (N, 1, H, W), drawn from ``generator``
        (None: torch's global generator)."""
        return self.apply(x, self.draw(len(x), tuple(x.shape[1:]), generator, x.device, x.dtype))

    def draw(
        self,
        count: int,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> PhotometricDraw:
        """Random strengths, fields, noise and squares for ``count`` samples of ``shape`` ``(C, H, W)``."""
        channels, height, width = shape

        def uniform(*size: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            unit = torch.rand(size, generator=generator, device=device, dtype=dtype)
            return low + (high - low) * unit

        def symmetric(limit: float) -> torch.Tensor:
            return uniform(count, 1, 1, 1, low=-limit, high=limit)

        log_gamma = symmetric(math.log(self.gamma))
        coefficients = uniform(count, 5, low=-self.bias_field, high=self.bias_field)
        field = torch.einsum("nk,khw->nhw", coefficients, _quadratic_monomials(height, width, device, dtype)).exp()
        return PhotometricDraw(
            gamma=log_gamma.exp(),
            field=field[:, None],
            gain=1 + symmetric(self.contrast),
            offset=symmetric(self.brightness),
            sigma=uniform(count, high=self.blur),
            noise=uniform(count, 1, 1, 1, high=self.noise)
            * torch.randn(count, channels, height, width, generator=generator, device=device, dtype=dtype),
            cut=self._squares(uniform(count, 3), height, width),
        )

    def apply(self, x: torch.Tensor, drawn: PhotometricDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """The strong views of ``x`` (N, C, H, W) under ``drawn`` (for the same N samples), and the pixels they
        keep (N, 1, H, W) bool: all but the cutout squares."""
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(torch.finfo(x.dtype).eps)
        unit = ((x - low) / span).pow(drawn.gamma) * drawn.field
        strong = (low + span * unit) * drawn.gain + drawn.offset
        strong = self._blurred(strong, drawn.sigma) + drawn.noise
        return strong.masked_fill(drawn.cut, 0.0), ~drawn.cut

    def _squares(self, unit: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, 1, H, W) bool cutout squares from ``unit`` (N, 3) uniform numbers: side, centre row, centre column."""
        side = (unit[:, 0] * self.cutout * min(height, width))[:, None, None, None]
        rows = torch.arange(height, device=unit.device, dtype=unit.dtype)[:, None]
        columns = torch.arange(width, device=unit.device, dtype=unit.dtype)
        inside_rows = (rows - unit[:, 1, None, None, None] * height).abs() < side / 2
        inside_columns = (columns - unit[:, 2, None, None, None] * width).abs() < side / 2
        return inside_rows & inside_columns

    def _blurred(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) blurred per sample by a separable Gaussian of standard deviation ``sigma`` (N,);
        borders repeat the edge pixel."""
        radius = math.ceil(3 * self.blur)
        if radius == 0:
            return x
        count, channels, height, width = x.shape
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernels = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3)[:, None]) ** 2)
        kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
        planes = x.reshape(1, count * channels, height, width)
        planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), kernels[:, None, None, :],
                          groups=count * channels)
        planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), kernels[:, None, :, None],
                          groups=count * channels)
        return planes.reshape(count, channels, height, width)


def _quadratic_monomials(height: int, width: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """(5, H, W): ``y, x, y², xy, x²`` on a grid spanning [-1, 1] in both directions."""
    y = torch.linspace(-1, 1, height, device=device, dtype=dtype)[:, None].expand(height, width)
    x = torch.linspace(-1, 1, width, device=device, dtype=dtype)[None, :].expand(height, width)
    return torch.stack([y, x, y * y, x * y, x * x])
