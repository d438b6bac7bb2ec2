"""Image files in, square crops out, for prediction: listing and decoding images as people have
them (EXIF orientation, grayscale, palette, RGBA, CMYK, 16-bit), boxes, and the crop a model
reads (the same geometry as training's crops)."""

import math
import os
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image, ImageOps, UnidentifiedImageError

from hmr_jax.data import augment as augment_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


DEFAULT_MAX_MEGAPIXELS = 50.0


DEFAULT_BBOX_SCALE = 1.2  # the synthetic data's and SPIN's box margin around the person


MIN_IMAGE_SHARE = 0.01  # a crop less than 1% image (the rest black padding) is refused


class ImageError(ValueError):
    """An input image cannot be used; the message names the file and the problem."""


def list_images(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand folders (their image files, sorted) -> (image paths, [(path, error)] for bad paths)."""
    images, errors = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, n)
                for n in os.listdir(p)
                if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, n))
            )
            if not found:
                errors.append((p, f"folder holds no image files (expected extensions {', '.join(IMAGE_EXTENSIONS)})"))
            images += found
        else:
            images.append(p)
    return images, errors


def load_image(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> UInt8[np.ndarray, "h w 3"]:
    """Read an image as uint8 RGB (H, W, 3), EXIF orientation applied; raise `ImageError` saying why not."""

    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ImageError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    limit = int(max_megapixels * 1e6)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageError(f"{path}: zero-size image ({w}x{h} px)")
            if w * h > limit:
                raise ImageError(
                    f"{path}: {w}x{h} px = {w * h / 1e6:.1f} MP, over the {max_megapixels:g} MP limit "
                    f"(--max-megapixels)"
                )
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: absurdly large image ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can decode (corrupt or unknown format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageError(f"{path}: expected an RGB image, found array of shape {rgb.shape}")
    return rgb


def _to_rgb8(im) -> UInt8[np.ndarray, "h w 3"]:
    """A Pillow image as uint8 RGB. High-bit-depth single-channel images (16-bit grayscale PNG /
    TIFF: modes I;16*, I; float TIFF: F) are scaled to 8 bits as tf.io.decode_image scales them
    in training (Pillow's own convert("RGB") clips them to 255, a white image); a float image
    is taken as [0, 1] when its maximum is at most 1, else as [0, 255]."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, np.float64)
        if im.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = np.floor(a / 256.0)  # the top 8 of 16 bits, as TensorFlow's uint16 -> uint8
        gray = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """'x,y,w,h' (image pixels, top-left corner, width, height; w, h > 0) -> floats, or None."""
    if not text:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"--bbox: expected 'x,y,w,h' (four numbers, w > 0, h > 0), found {text!r}")
    return box


def parse_point(text: str | None) -> tuple[float, float] | None:
    """'cx,cy' (--principal-point, image pixels) -> floats, or None."""
    if not text:
        return None
    try:
        point = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        point = ()
    if len(point) != 2 or not all(math.isfinite(v) for v in point):
        raise ValueError(f"--principal-point: expected 'cx,cy' (two numbers, image pixels), found {text!r}")
    return point


def clip_bbox(
    image_hw: tuple[int, int], bbox: Sequence[float], name: str = "--bbox"
) -> tuple[tuple[float, float, float, float], bool]:
    """The box (x, y, w, h, image pixels) intersected with the image [0, W] x [0, H] -> (box, clipped?).

    Raises ValueError, naming the box `name` ('--bbox', or 'box' for a person's from a file), when
    nothing of the box lies in the image."""
    h, w = image_hw
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"{name} {x:g},{y:g},{bw:g},{bh:g} lies outside the {w}x{h} px image (expected a box overlapping "
            f"[0, {w}] x [0, {h}])"
        )
    box = (x0, y0, x1 - x0, y1 - y0)
    return box, box != (x, y, bw, bh)


def image_share(image_hw: tuple[int, int], cx: float, cy: float, side: float) -> float:
    """The share of the square crop (centre, side; edge coordinates) covered by the image's pixels."""
    h, w = image_hw
    ox = max(0.0, min(cx + side / 2.0, w) - max(cx - side / 2.0, 0.0))
    oy = max(0.0, min(cy + side / 2.0, h) - max(cy - side / 2.0, 0.0))
    return ox * oy / (side * side)


def crop_box(
    image_hw: tuple[int, int],
    bbox: Sequence[float] | None = None,
    bbox_scale: float = DEFAULT_BBOX_SCALE,
    name: str = "--bbox",
) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side) in pixel-edge coordinates (the image spans [0, W] x [0, H]).

    With `bbox` (x, y, w, h): the box clipped to the image (`clip_bbox`; a box wholly outside it
    raises ValueError), centred on it, side = max(w, h) * bbox_scale. Without: the whole image,
    centred, side = max(H, W) (the shorter side padded with black). A crop less than
    `MIN_IMAGE_SHARE` of which is image (the rest is black padding) raises ValueError (an image
    over 100 times as wide as tall, or as tall as wide, needs a box). `name` names the box in the
    messages: '--bbox', or 'box' for a person's from a keypoints / boxes file.
    """
    h, w = image_hw
    if bbox is None:
        cx, cy, side = w / 2.0, h / 2.0, float(max(h, w))
    else:
        (x, y, bw, bh), _ = clip_bbox(image_hw, bbox, name)
        cx, cy, side = x + bw / 2.0, y + bh / 2.0, float(max(bw, bh) * bbox_scale)
    share = image_share(image_hw, cx, cy, side)
    if share < MIN_IMAGE_SHARE:
        raise ValueError(
            f"the {side:.4g} px square crop around ({cx:.4g}, {cy:.4g}) holds {100 * share:.2g}% image pixels "
            f"(the rest black padding), expected at least {100 * MIN_IMAGE_SHARE:g}% "
            f"(image {w}x{h} px{f', {name}' if bbox is not None else ''})"
            + ("; give the person's box (--bbox, --boxes or --keypoints)" if bbox is None else "")
        )
    return cx, cy, side


def crop(image: UInt8[np.ndarray, "h w 3"], cx: float, cy: float, side: float, size: int) -> UInt8[np.ndarray, "s s 3"]:
    """The square [cx - side/2, cx + side/2] x [cy - side/2, cy + side/2] of `image` resized to
    (size, size) (bilinear, antialiased when shrinking; outside the image = black), uint8.

    Same geometry as the training crops (`data.augment`: box centre -> crop centre, side -> size).
    Only the output pixels the image reaches are resampled, from the image plus a black margin as
    wide as the filter (the result is that of resampling the whole zero-padded square), so a square
    far larger than the image costs no more memory than the image; when even that window would be
    large (a tiny share of image in a huge square), the image is first shrunk by an integer factor.
    """
    h, w = image.shape[:2]
    scale = side / size  # image px per output px
    x0, y0 = cx - side / 2.0, cy - side / 2.0
    reach = max(scale, 1.0)  # the bilinear filter's support in image px
    margin = math.ceil(4.0 * reach) + 3
    xi0, yi0 = math.floor(x0), math.floor(y0)
    xi1, yi1 = math.ceil(x0 + side), math.ceil(y0 + side)
    wx0, wy0, wx1, wy1 = max(xi0, -margin), max(yi0, -margin), min(xi1, w + margin), min(yi1, h + margin)
    if (wx1 - wx0) * (wy1 - wy0) > 4 * h * w + (1 << 20) and scale >= 4.0:
        f = int(scale // 2)
        small = np.asarray(Image.fromarray(image).reduce(f))
        return crop(small, cx * small.shape[1] / w, cy * small.shape[0] / h, side * small.shape[1] / w, size)

    def span(origin: float, extent: int) -> tuple[int, int]:  # output px whose filter may touch the image
        lo = math.floor((-reach - 1.0 - origin) / scale - 0.5)
        hi = math.ceil((extent + reach + 1.0 - origin) / scale - 0.5) + 1
        return max(lo, 0), min(hi, size)

    (u0, u1), (v0, v1) = span(x0, w), span(y0, h)
    out = np.zeros((size, size, 3), np.uint8)
    if u1 <= u0 or v1 <= v0 or wx1 <= wx0 or wy1 <= wy0:
        return out
    window = np.zeros((wy1 - wy0, wx1 - wx0, 3), np.uint8)  # the image and a black margin
    ix0, iy0, ix1, iy1 = max(wx0, 0), max(wy0, 0), min(wx1, w), min(wy1, h)
    if ix1 > ix0 and iy1 > iy0:
        window[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0] = image[iy0:iy1, ix0:ix1]
    box = (x0 + u0 * scale - wx0, y0 + v0 * scale - wy0, x0 + u1 * scale - wx0, y0 + v1 * scale - wy0)
    box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], wx1 - wx0), min(box[3], wy1 - wy0))
    part = Image.fromarray(window).resize((u1 - u0, v1 - v0), Image.BILINEAR, box=box)
    out[v0:v1, u0:u1] = np.asarray(part)
    return out


def normalize(crop_u8: UInt8[np.ndarray, "s s 3"]) -> Float[np.ndarray, "s s 3"]:
    """uint8 RGB -> float32 ImageNet-normalised (as the training pipeline)."""
    mean, std = np.asarray(augment_lib.IMAGENET_MEAN, np.float32), np.asarray(augment_lib.IMAGENET_STD, np.float32)
    return ((crop_u8.astype(np.float32) / 255.0) - mean) / std
