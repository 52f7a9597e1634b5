"""Image folders streamed from disk: files are decoded one at a time in the loader (its
worker processes with ``data.num_workers``), so memory is bounded by the prefetch
buffer, not by the data set (ImageNet's 1.28M images would need about 190 GB decoded).

Training crops are Inception-style random-resized crops (8-100% of the area, aspect
3/4-4/3) plus a horizontal flip, with optional RandAugment (paper: 4 layers at
magnitude 5); the crop is resized to ``data.index_dims``, so position encodings are
relative to the crop. Evaluation takes the official centre crop (0.875 of the shorter
side, resized bicubically in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from suite.errors import DataError

EVAL_CROP = 0.875  # 224 of 256, the standard ImageNet evaluation crop


class ImageFiles:
    """A lazy ``[n, H, W, C]`` uint8 "array" of image files: indexing an int decodes one
    file at its own size; indexing a slice or index array selects files."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: list[Path], index_dims: tuple[int, int], channels: int):
        self.paths, self.index_dims, self.channels = list(paths), tuple(index_dims), channels

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.index_dims, self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx):
        if isinstance(idx, int | np.integer):
            return decode(self.paths[int(idx)], self.channels)
        picked = np.arange(len(self.paths))[idx]
        return ImageFiles([self.paths[i] for i in picked], self.index_dims, self.channels)

    def check(self, i: int) -> str | None:
        """Why file ``i`` does not decode, or None if it does."""
        return decode_error(self.paths[i], self.channels)

    def error(self, i: int) -> str:
        """Why file ``i`` did not decode in the loader (for the log of skipped files)."""
        return self.check(i) or "unreadable in the loader"

    def stats(self, limit: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of up to ``limit`` centre crops (evenly spaced files)."""
        picks = np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)
        total, squares, count = np.zeros(self.channels), np.zeros(self.channels), 0
        for i in picks:  # one image at a time: memory stays flat
            try:
                image = self[int(i)]
            except DataError:  # an unreadable file: the statistics come from the others
                continue
            pixels = center_crop(image, self.index_dims).reshape(-1, self.channels)
            total += pixels.sum(axis=0, dtype=np.float64)
            squares += np.square(pixels, dtype=np.float64).sum(axis=0)
            count += len(pixels)
        if not count:
            raise DataError(f"{self.paths[0].parent.parent}: none of {len(picks)} sampled "
                            "image files decodes")
        mean = total / count
        return mean, np.sqrt(np.maximum(squares / count - mean**2, 1e-12))


def decode(path: Path, channels: int) -> np.ndarray:
    """One image file as uint8 ``[h, w, channels]`` at its own size, whatever its format
    says: EXIF orientation applied; 16-bit (``I;16``, ``I``) and float (``F``, taken as
    0..1) pixels scaled to 0..255, not clipped; palette and alpha images composited on
    white. Unreadable, truncated or oversized files (Pillow's decompression-bomb limit)
    raise :class:`DataError` naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            arr = _to_uint8(im, channels)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: over Pillow's pixel limit ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return arr.reshape(*arr.shape[:2], channels)


def _to_uint8(im, channels: int) -> np.ndarray:
    """A PIL image in any mode as uint8 grayscale (1 channel) or RGB (3)."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        x = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            x = x * 255.0  # float pixels: 0..1
        elif im.mode.startswith("I;16") or x.max(initial=0) <= 65535:
            x = x * (255.0 / 65535.0)  # 16-bit pixels (a 16-bit PNG opens as I;16 or I)
        else:
            x = x * (255.0 / 2**31)  # 32-bit integer pixels
        gray = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def decode_error(path: Path, channels: int) -> str | None:
    """Why ``path`` does not decode, or None if it does."""
    try:
        decode(path, channels)
    except DataError as e:
        return str(e)
    return None


def resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A uint8 ``[h, w, C]`` image resized bicubically to ``hw``."""
    from PIL import Image

    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    out = np.asarray(pil.resize((hw[1], hw[0]), Image.BICUBIC), dtype=np.uint8)
    return out.reshape(*hw, img.shape[-1])


def center_crop(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The official evaluation crop ([DM] ``train/dataset.py``): the centred window of
    0.875 (224 / (224 + 32)) of the shorter side, in the output's aspect ratio, resized
    to ``hw`` bicubically in float32 without clamping the overshoots; ``[*hw, C]``."""
    h, w = img.shape[:2]
    side = EVAL_CROP * min(h, w) / max(hw)
    ch, cw = max(1, int(side * hw[0])), max(1, int(side * hw[1]))
    top, left = (h - ch + 1) // 2, (w - cw + 1) // 2
    return resize_float(img[top:top + ch, left:left + cw], hw)


def resize_float(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of each channel as float32 (as TensorFlow's: no clamping)."""
    from PIL import Image

    channels = [np.asarray(Image.fromarray(img[..., c].astype(np.float32)).resize(
        (hw[1], hw[0]), Image.BICUBIC), dtype=np.float32) for c in range(img.shape[-1])]
    return np.stack(channels, axis=-1)


def crop_box(h: int, w: int, rng: np.random.Generator,
             scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int] | None:
    """An Inception-style crop window ``(top, left, height, width)`` of an ``h x w`` image:
    a random area fraction and aspect ratio; None after 10 tries (then: the centre crop)."""
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return None


def random_resized_crop(img: np.ndarray, hw: tuple[int, int], rng: np.random.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """Inception-style crop: a random area fraction and aspect ratio, resized to ``hw``,
    then a random horizontal flip (falls back to the centre crop after 10 tries)."""
    box = crop_box(*img.shape[:2], rng, scale, ratio)
    if box is None:
        out = np.clip(np.rint(center_crop(img, hw)), 0, 255).astype(np.uint8)
    else:
        top, left, ch, cw = box
        out = resize(img[top:top + ch, left:left + cw], hw)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _ops() -> dict[str, Callable]:
    """RandAugment's operations: ``op(pil_image, magnitude in [0, 1], sign) -> image``."""
    from PIL import Image, ImageEnhance, ImageOps

    def affine(im, a, b, c, d, e, f):
        return im.transform(im.size, Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR)

    return {
        "identity": lambda im, m, s: im,
        "autocontrast": lambda im, m, s: ImageOps.autocontrast(im),
        "equalize": lambda im, m, s: ImageOps.equalize(im),
        "rotate": lambda im, m, s: im.rotate(30 * m * s, Image.BILINEAR),
        "solarize": lambda im, m, s: ImageOps.solarize(im, 256 - int(256 * m)),
        "posterize": lambda im, m, s: ImageOps.posterize(im, 8 - int(4 * m)),
        "color": lambda im, m, s: ImageEnhance.Color(im).enhance(1 + 0.9 * m * s),
        "contrast": lambda im, m, s: ImageEnhance.Contrast(im).enhance(1 + 0.9 * m * s),
        "brightness": lambda im, m, s: ImageEnhance.Brightness(im).enhance(1 + 0.9 * m * s),
        "sharpness": lambda im, m, s: ImageEnhance.Sharpness(im).enhance(1 + 0.9 * m * s),
        "shear_x": lambda im, m, s: affine(im, 1, 0.3 * m * s, 0, 0, 1, 0),
        "shear_y": lambda im, m, s: affine(im, 1, 0, 0, 0.3 * m * s, 1, 0),
        "translate_x": lambda im, m, s: affine(im, 1, 0, 0.45 * m * s * im.width, 0, 1, 0),
        "translate_y": lambda im, m, s: affine(im, 1, 0, 0, 0, 1, 0.45 * m * s * im.height),
    }


def randaugment(img: np.ndarray, layers: int, magnitude: int,
                rng: np.random.Generator) -> np.ndarray:
    """RandAugment (Cubuk et al., 2020): ``layers`` operations drawn uniformly, each at
    ``magnitude`` out of 10 with a random sign. PIL-based, a few lines per operation."""
    from PIL import Image

    if layers <= 0:
        return img
    ops = _ops()
    names = sorted(ops)
    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    for _ in range(layers):
        name = names[rng.integers(0, len(names))]
        im = ops[name](im, magnitude / 10.0, 1 if rng.random() < 0.5 else -1)
    out = np.asarray(im, dtype=np.uint8)
    return out.reshape(*out.shape[:2], img.shape[-1])
