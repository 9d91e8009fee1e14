#!/usr/bin/python3
"""`trick preprocess` against PIL (and torchvision.transforms when importable).

Usage: images_check.py TRICK_BINARY

For real photographs (python3-skimage's sample data: different sizes and aspects, a gray
and an RGBA one) and synthetic noise images (worst case for rounding; up- and
down-scaling, odd sizes), checks:
  1. decoding: our pixels equal PIL's convert("RGB") / convert("L") exactly for PNGs;
     a JPEG's difference (different decoders) is reported;
  2. Resize(342) + CenterCrop(299) against PIL on 8-bit images (what torchvision does):
     Pillow rounds to 8 bits after each of its two passes and we stay in float, so small
     differences are expected: max and mean |diff| in 1/255 units are reported and bounded;
  3. the same transform against PIL on float ("F") images, which uses Pillow's weights in
     double with no rounding: this pins our weight tables to Pillow's to float precision;
  4. torchvision.transforms gives exactly the PIL path of 2 (so 2 tests what PyTorch sees);
  5. bad input: a clear error naming the file and no output file left behind.
Prints a table; exits non-zero on any failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

SKIMAGE = "/usr/lib/python3/dist-packages/skimage/data/"
RESIZE, CROP = 342, 299
# Bounds in 1/255 units. Pillow's 8-bit result is round(V(round(H(x)))) with non-negative
# weights summing to 1, so it is within 0.5 + 0.5 of the exact V(H(x)) we compute: the max
# bound is that theory plus Pillow's fixed-point coefficient error; measured max 1.000.
# The mean bound is from measurement (0.17 to 0.31 over these images) with margin.
MAX_8BIT_DIFF = 1.01
MEAN_8BIT_DIFF = 0.35
MAX_FLOAT_DIFF = 5e-4  # float32 against Pillow's double: measured max 6e-5
JPEG_MEAN_DIFF = 0.1   # stb vs libjpeg decoding rocket.jpg: measured mean 0.01

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def run_trick(trick, args):
    return subprocess.run([trick] + args, capture_output=True, text=True)


def preprocess(trick, path, out, *extra):
    r = run_trick(trick, ["preprocess", path, "--out", out] + list(extra))
    if r.returncode != 0:
        raise RuntimeError(f"trick preprocess {path} {' '.join(extra)} failed: {r.stderr.strip()}")
    with open(out, "rb") as f:
        head = f.read(10)
    header_len = head[8] | (head[9] << 8)
    check(head[:8] == b"\x93NUMPY\x01\x00" and (10 + header_len) % 64 == 0, f"{out}: .npy header layout")
    a = np.load(out)
    check(a.dtype == np.float32, f"{out}: dtype {a.dtype}")
    return a


def plan(h, w):
    """torchvision 0.14: Resize(342) output size, then CenterCrop(299) offsets."""
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = RESIZE, int(RESIZE * long_ / short)
    rw, rh = (new_short, new_long) if w <= h else (new_long, new_short)
    top = int(round((rh - CROP) / 2.0))
    left = int(round((rw - CROP) / 2.0))
    return rh, rw, top, left


def pil_8bit(im):
    rh, rw, top, left = plan(im.height, im.width)
    r = im.resize((rw, rh), Image.BILINEAR).crop((left, top, left + CROP, top + CROP))
    return np.asarray(r, dtype=np.float64) / 255.0


def pil_float(im):
    rh, rw, top, left = plan(im.height, im.width)
    bands = []
    for b in im.split():
        f = b.convert("F").resize((rw, rh), Image.BILINEAR).crop((left, top, left + CROP, top + CROP))
        bands.append(np.asarray(f, dtype=np.float64))
    return np.stack(bands, axis=-1) / 255.0


def torchvision_8bit(im):
    try:
        import torchvision.transforms as T
    except Exception:  # torchvision is optional for this check
        return None
    r = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP)])(im)
    return np.asarray(r, dtype=np.float64) / 255.0


def synthetic(tmp):
    """Noise images (each pixel independent: the worst case for rounding), odd sizes."""
    rng = np.random.default_rng(1234)
    out = []
    # (344, 342) and (342, 348): no resize, crop offsets 22.5 and 24.5 (Python rounds to even).
    for h, w in [(37, 53), (100, 80), (343, 301), (1000, 999), (600, 350), (344, 342), (342, 348)]:
        a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        path = os.path.join(tmp, f"noise_{h}x{w}.png")
        Image.fromarray(a).save(path)
        out.append(path)
    return out


def main():
    trick = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="trick_images_check_")
    out = os.path.join(tmp, "x.npy")
    photos = [SKIMAGE + f for f in
              ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "motorcycle_left.png", "logo.png"]]
    images = photos + synthetic(tmp)

    print(f"{'image':28} {'size':>9} {'mode':>4}  8-bit PIL: max  mean (1/255)   float PIL: max (1/255)")
    worst_max = worst_mean = worst_float = 0.0
    for path in images:
        name = os.path.basename(path)
        im = Image.open(path)
        mode = im.mode
        rgb = im.convert("RGB")
        gray = im.convert("L")

        # 1. decoding, exact for PNG.
        raw = preprocess(trick, path, out, "--input-size", "raw")
        want = np.asarray(rgb, dtype=np.float64)
        check(raw.shape == want.shape, f"{name}: decoded shape {raw.shape}, PIL {want.shape}")
        check(np.array_equal(np.round(raw.astype(np.float64) * 255), want), f"{name}: decoded RGB differs from PIL")
        check(np.abs(raw * 255.0 - np.round(raw * 255.0)).max() < 1e-3, f"{name}: decoded values not k/255")
        raw_l = preprocess(trick, path, out, "--input-size", "raw", "--gray")
        check(np.array_equal(np.round(raw_l[..., 0].astype(np.float64) * 255), np.asarray(gray, dtype=np.float64)),
              f"{name}: decoded gray differs from PIL's convert('L')")

        # 2-4. the transform.
        ours = preprocess(trick, path, out).astype(np.float64)  # defaults: --resize-shorter 342 --crop 299
        ref8 = pil_8bit(rgb)
        check(ours.shape == ref8.shape == (CROP, CROP, 3), f"{name}: transform shape {ours.shape}")
        d8 = np.abs(ours - ref8) * 255
        dfl = np.abs(ours - pil_float(rgb)) * 255
        tv = torchvision_8bit(rgb)
        if tv is not None:
            check(np.array_equal(tv, ref8), f"{name}: torchvision's transform differs from the PIL path")
        print(f"{name:28} {im.width:4}x{im.height:<4} {mode:>4}  {d8.max():14.3f} {d8.mean():6.3f}"
              f"   {dfl.max():18.2e}")
        worst_max, worst_mean = max(worst_max, d8.max()), max(worst_mean, d8.mean())
        worst_float = max(worst_float, dfl.max())
        check(d8.max() <= MAX_8BIT_DIFF, f"{name}: max |diff| {d8.max():.3f}/255 > {MAX_8BIT_DIFF}/255")
        check(d8.mean() < MEAN_8BIT_DIFF, f"{name}: mean |diff| {d8.mean():.3f}/255 >= {MEAN_8BIT_DIFF}/255")
        check(dfl.max() < MAX_FLOAT_DIFF, f"{name}: float-PIL max |diff| {dfl.max():.2e}/255 >= {MAX_FLOAT_DIFF}")

        # Gray pipeline (what a 1-channel model sees).
        ours_l = preprocess(trick, path, out, "--gray").astype(np.float64)
        dl = np.abs(ours_l[..., 0] - pil_float(gray)[..., 0]) * 255
        check(dl.max() < MAX_FLOAT_DIFF, f"{name}: gray float-PIL max |diff| {dl.max():.2e}/255")

    print(f"worst: 8-bit max {worst_max:.3f}/255, mean {worst_mean:.3f}/255; float max {worst_float:.2e}/255")

    # JPEG: stb and libjpeg decode differently; report and bound the mean.
    jpeg = SKIMAGE + "rocket.jpg"
    raw = preprocess(trick, jpeg, out, "--input-size", "raw").astype(np.float64)
    dj = np.abs(np.round(raw * 255) - np.asarray(Image.open(jpeg).convert("RGB"), dtype=np.float64))
    print(f"rocket.jpg decoding vs PIL (libjpeg): max {dj.max():.0f}/255, mean {dj.mean():.3f}/255, "
          f"{(dj == 0).mean() * 100:.1f}% identical")
    check(dj.mean() < JPEG_MEAN_DIFF, f"rocket.jpg: mean decoding difference {dj.mean():.3f}/255")

    # 5. errors: one line naming the file, exit code 1, no output left.
    for bad in [SKIMAGE + "truncated.jpg", os.path.join(tmp, "missing.png")]:
        target = os.path.join(tmp, "never.npy")
        r = run_trick(trick, ["preprocess", bad, "--out", target])
        check(r.returncode == 1 and r.stderr.startswith("error: ") and bad in r.stderr,
              f"preprocess {bad}: rc {r.returncode}, stderr {r.stderr.strip()!r}")
        check(not os.path.exists(target), f"preprocess {bad}: left {target} behind")
    leftovers = [f for f in os.listdir(tmp) if f.startswith(".") or "tmp" in f]
    check(not leftovers, f"temporary files left behind: {leftovers}")

    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
