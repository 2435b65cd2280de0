"""Training-time augmentation on whole batches: random affine maps, elastic distortion, ink changes.

Every image in a batch gets its own random transform, yet no Python runs per sample: the affine
matrices (B, 2, 3) and the displacement fields (B, 2, H, W) are drawn as tensors, combined into one
sampling grid, and F.grid_sample resamples the batch in a single call. Randomness comes only from the
torch.Generator passed in, so a run with the same seed sees the same distorted images.

    x = scale_pixels(uint8).unsqueeze(1)                # (B, 1, 28, 28) float32 in [0, 1]
    x = augment_batch(x, "affine+elastic", generator)   # same shape, dtype and range

A mode joins parts with "+": affine, elastic, ink, shift, flip, erase. `flip` mirrors half the images
left to right: for Fashion-MNIST (a shoe facing either way is a shoe), never for digits. `erase`
replaces a random rectangle of half the images with noise (random erasing). `shift` moves each
image by whole pixels (up to 2 each way, zeros coming in: the "pad and random crop" of the usual
Fashion-MNIST and CIFAR recipes), without the resampling blur of `affine`, which suits clothes'
textures better than rotating them. `ink` changes the pen rather
than the shape: strokes thicker or thinner, faded unevenly, broken in places, blurred. MNIST was
written with one kind of pen and scanned cleanly; photos of pencil, ballpoint and marker are not, and
preprocessing can only normalise so much of that.

Defaults follow the published recipes that reach 99.6-99.7% with plain CNNs: rotation +-10 degrees,
zoom +-10%, shifts of +-10% of the side (Keras ImageDataGenerator settings used by the well-known
Kaggle MNIST committees), plus a mild shear; elastic distortion as Simard et al. (2003), "Best
practices for convolutional neural networks applied to visual document analysis": a uniform random
field in [-1, 1] smoothed by a Gaussian of sigma 4 pixels and scaled by alpha 34 pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from digitnet.errors import DigitnetError

PARTS = ("affine", "elastic", "ink", "shift", "flip", "erase")
MODES = ("none", "affine", "elastic", "affine+elastic", "ink", "affine+ink", "affine+elastic+ink", "flip",
         "affine+flip", "shift+flip", "flip+erase")


@dataclass(frozen=True)
class AugmentSettings:
    rotation: float = 10.0     # degrees, uniform in [-rotation, rotation]
    scale: float = 0.10        # zoom factor uniform in [1 - scale, 1 + scale]
    translate: float = 0.10    # shift as a fraction of the side (0.1 of 28 px = 2.8 px)
    shear: float = 0.15        # x-shear factor uniform in [-shear, shear] (0.15 is about 8.5 degrees)
    alpha: float = 34.0        # elastic: displacement scale in pixels (Simard et al. 2003)
    sigma: float = 4.0         # elastic: Gaussian smoothing of the random field, in pixels
    ink: float = 1.0           # ink: strength of the pen changes (0: none)
    flip: float = 0.5          # flip: chance that an image is mirrored left to right
    shift: int = 2             # shift: whole pixels each way, at most
    erase: float = 0.5         # erase: chance that an image has a rectangle replaced by noise
    erase_area: tuple[float, float] = (0.02, 0.4)  # erase: the rectangle's share of the image
    erase_aspect: float = 3.3  # erase: height/width between 1/erase_aspect and erase_aspect


DEFAULT = AugmentSettings()
NONE = AugmentSettings(rotation=0.0, scale=0.0, translate=0.0, shear=0.0, alpha=0.0, ink=0.0, flip=0.0, shift=0,
                       erase=0.0)


def parts(mode: str) -> set[str]:
    """The parts of a mode ("affine+ink" -> {"affine", "ink"}); unknown or repeated parts are refused."""
    names = [] if mode == "none" else mode.split("+")
    if any(n not in PARTS for n in names) or len(set(names)) != len(names):
        raise DigitnetError(f"augment must be none or parts of {'+'.join(PARTS)} joined by '+' "
                            f"(e.g. {', '.join(MODES[1:4])}); got {mode!r}")
    return set(names)


def check_mode(mode: str) -> None:
    parts(mode)


def _uniform(shape, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform samples on the generator's device (CPU), so results do not depend on the training device."""
    return torch.rand(shape, generator=generator) * (high - low) + low


def affine_matrices(batch: int, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) matrices mapping output coordinates to input coordinates, in grid_sample's [-1, 1] units."""
    angle = _uniform(batch, -settings.rotation, settings.rotation, generator) * (math.pi / 180)
    zoom = _uniform(batch, 1 - settings.scale, 1 + settings.scale, generator)
    shear = _uniform(batch, -settings.shear, settings.shear, generator)
    shift = _uniform((batch, 2), -settings.translate, settings.translate, generator) * 2  # side = 2 units
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Forward map: rotate @ shear @ zoom. grid_sample needs the inverse (where each output pixel
    # samples from), so the matrix is built for a random inverse directly; the distributions are
    # symmetric, so sampling the inverse is as good as sampling the forward map.
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    shr = torch.eye(2).repeat(batch, 1, 1)
    shr[:, 0, 1] = shear
    linear = rot @ shr / zoom.view(-1, 1, 1)
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)  # (B, 2, 3)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def elastic_field(batch: int, height: int, width: int, settings: AugmentSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """(B, H, W, 2) displacements in grid units: smoothed uniform noise, alpha pixels strong."""
    field = _uniform((batch * 2, 1, height, width), -1.0, 1.0, generator)
    k = _gaussian_kernel(settings.sigma)
    pad = len(k) // 2
    # Separable Gaussian blur as two 1-D convolutions over the whole batch of fields.
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect" if pad < width else "replicate"),
                     k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect" if pad < height else "replicate"),
                     k.view(1, 1, -1, 1))
    field = field.view(batch, 2, height, width) * settings.alpha  # pixels
    # Pixels -> grid units: the side of W pixels spans 2 units (align_corners=False).
    scale = torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)  # (B, H, W, 2) as (x, y)


def _pool_max(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum with zero padding, as two 1-D passes of shifted views (max_pool2d at stride 1 is
    several times slower on CPU)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _low_res_field(batch: int, cells: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """(B, 1, H, W) smooth random values in [0, 1]: a cells x cells grid of uniforms, bilinearly enlarged."""
    coarse = torch.rand((batch, 1, cells, cells), generator=generator)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=True)


def ink_changes(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per image: thicker or thinner strokes, uneven fading, gaps, blur; then ink rescaled to peak 1.

    Each change is a blend between the image and a changed copy with a random weight, so the batch
    covers every degree from none to full without Python per sample. The rescale at the end matches
    preprocessing, which stretches the strongest ink of any photo to 1.
    """
    batch, _, h, w = x.shape

    def weight(p: float) -> torch.Tensor:
        """Blend weights (B, 1, 1, 1): 0 for a fraction 1 - p of the images, uniform in (0, strength] else."""
        on = torch.rand(batch, generator=generator) < p
        return (on * torch.rand(batch, generator=generator) * strength).view(-1, 1, 1, 1).to(x)

    thick, thin = weight(0.3), weight(0.2)
    x = x + thick * (_pool_max(x) - x)  # dilation: a marker or a pressed pen
    x = x + thin * (-_pool_max(-x) - x)  # erosion: a fine pen
    # Uneven pressure: ink multiplied by a smooth field between 1 and 0.3 (a pencil going faint).
    fade = weight(0.3)
    field = _low_res_field(batch, 4, (h, w), generator).to(x)
    x = x * (1 - fade * 0.7 * field)
    # Gaps: where a second smooth field is lowest, the stroke breaks (skipping ballpoint, chalk).
    gaps = weight(0.2)
    field = _low_res_field(batch, 7, (h, w), generator).to(x)
    x = x * (1 - gaps * (field < 0.2).to(x))
    blur = weight(0.25)
    x = x + blur * (F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) - x)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0.05, x / peak.clamp_min(1e-6), x)


def erase_rectangles(x: torch.Tensor, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020, "Random Erasing Data Augmentation"): in a share of the
    images, one rectangle of random area and aspect is replaced by uniform noise, so the network
    cannot lean on any one part of the object (a collar, a heel) being visible. Boxes are drawn as
    tensors and applied as one mask; a box that would not fit is clipped at the image's edge."""
    batch, _, height, width = x.shape
    area = _uniform(batch, *settings.erase_area, generator) * (height * width)
    log_aspect = math.log(settings.erase_aspect)
    aspect = torch.exp(_uniform(batch, -log_aspect, log_aspect, generator))
    box_h = (area * aspect).sqrt().round().clamp(1, height)
    box_w = (area / aspect).sqrt().round().clamp(1, width)
    top = (torch.rand(batch, generator=generator) * (height - box_h + 1)).floor()
    left = (torch.rand(batch, generator=generator) * (width - box_w + 1)).floor()
    chosen = torch.rand(batch, generator=generator) < settings.erase
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
              & chosen.view(-1, 1, 1))
    noise = torch.rand(x.shape, generator=generator)
    return torch.where(inside.unsqueeze(1).to(x.device), noise.to(x.device, x.dtype), x)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator,
                  settings: AugmentSettings = DEFAULT) -> torch.Tensor:
    """Randomly distort a batch (B, 1, H, W) float in [0, 1]; returns the same shape, dtype and range."""
    use = parts(mode)
    if not use:
        return x
    batch, _, height, width = x.shape
    if use & {"affine", "elastic"}:
        if "affine" in use:
            theta = affine_matrices(batch, settings, generator)
        else:
            theta = torch.eye(2, 3).repeat(batch, 1, 1)
        grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)  # (B, H, W, 2)
        if "elastic" in use and settings.alpha > 0:
            grid = grid + elastic_field(batch, height, width, settings, generator)
        grid = grid.to(device=x.device, dtype=x.dtype)
        # Outside the image is background: zeros (black), as MNIST's border.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "shift" in use and settings.shift > 0:
        # Whole-pixel moves as a translation-only grid sampled nearest: an exact copy, shifted.
        pixels = torch.randint(-settings.shift, settings.shift + 1, (batch, 2), generator=generator)
        theta = torch.eye(2, 3).repeat(batch, 1, 1)
        theta[:, :, 2] = pixels * torch.tensor([2.0 / width, 2.0 / height])
        grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False).to(x.device, x.dtype)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if "flip" in use:
        mirror = (torch.rand(batch, generator=generator) < settings.flip).view(-1, 1, 1, 1).to(x.device)
        x = torch.where(mirror, x.flip(-1), x)
    if "ink" in use and settings.ink > 0:
        x = ink_changes(x, settings.ink, generator)
    if "erase" in use and settings.erase > 0:
        x = erase_rectangles(x, settings, generator)
    return x.clamp_(0.0, 1.0)  # bilinear weights and blends keep [0, 1] already; clamp guards rounding
