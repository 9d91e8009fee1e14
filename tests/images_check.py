#!/usr/bin/python3
"""`trick preprocess` against PIL (and torchvision.transforms when importable).

Usage: images_check.py TRICK_BINARY

For real photographs (python3-skimage's sample data: different sizes and aspects, a gray
and an RGBA one) and synthetic noise images (worst case for rounding; up- and
down-scaling, odd sizes), checks:
  1. decoding: our pixels equal PIL's convert("RGB") / convert("L") exactly, for the photos
     and for files made here in every layout PIL and libpng/libjpeg write: JPEG 4:2:0, 4:2:2,
     4:4:4, progressive, optimised, gray, CMYK (Adobe, inverted), noise at quality 50; PNG
     palette (with tRNS), gray+alpha, 1- and 2-bit gray, 16-bit RGB, Adam7-interlaced; GIF
     (transparency, interlace, animation, frames inside and outside the screen, a short
     colour table); WebP (lossy, lossless, noise at quality 50, alpha lossy and lossless, an
     extended file with EXIF, animations: the first frame); BMP 24/32-bit, palette, gray,
     1-bit. A 16-bit gray PNG keeps its high byte (PIL clips it to 255: a stated difference);
  2. Resize(342) + CenterCrop(299) against PIL on 8-bit images (what torchvision does):
     Pillow rounds to 8 bits after each of its two passes and we stay in float, so small
     differences are expected: max and mean |diff| in 1/255 units are reported and bounded;
  3. the same transform against PIL on float ("F") images, which uses Pillow's weights in
     double with no rounding: this pins our weight tables to Pillow's to float precision;
  4. torchvision.transforms gives exactly the PIL path of 2 (so 2 tests what PyTorch sees);
  5. bad input: a clear error naming the file and no output file left behind;
  6. `trick info` names the decoders' versions, and libjpeg-turbo's and libwebp's are PIL's
     (the same decoder is why the pixels are equal).
Prints a table; exits non-zero on any failure.
"""
import os
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

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


def png_file(path, w, h, depth, ctype, rows, interlace=0):
    """A PNG from raw scanlines (filter byte 0). rows(x0, y0, dx, dy) -> the bytes of the pass's
    scanlines, each with its filter byte; interlace=1 writes the 7 Adam7 passes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] \
        if interlace else [(0, 0, 1, 1)]
    raw = b"".join(rows(*p) for p in passes)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def gif_edit(path, im, screen, offset, **kw):
    """im saved as a GIF by PIL, then its logical screen set to `screen` (w, h) and its frame
    moved to `offset` (x, y)."""
    b = io.BytesIO()
    im.save(b, "GIF", **kw)
    g = bytearray(b.getvalue())
    g[6:10] = struct.pack("<HH", *screen)
    p = 13 + (3 * (2 << (g[10] & 7)) if g[10] & 0x80 else 0)  # after the global colour table
    while g[p] == 0x21:  # extensions: introducer, label, sub-blocks
        p += 2
        while g[p]:
            p += 1 + g[p]
        p += 1
    assert g[p] == 0x2C, "image descriptor expected"
    g[p + 1:p + 5] = struct.pack("<HH", *offset)
    with open(path, "wb") as f:
        f.write(g)
    return path


def gif_short_palette(path):
    """Indices 0..7 with a global colour table cut from 8 entries to 4 (PIL: (i, i, i) past it)."""
    im = Image.fromarray((np.arange(24).reshape(4, 6) % 8).astype(np.uint8), "P")
    im.putpalette([v for i in range(8) for v in (i * 30 + 10, 200 - i * 20, 7 * i)])
    b = io.BytesIO()
    im.save(b, "GIF")
    g = bytearray(b.getvalue())
    assert g[10] & 7 == 2
    g[10] = (g[10] & ~7) | 1
    del g[13 + 12:13 + 24]
    with open(path, "wb") as f:
        f.write(g)
    return path


def decode_variants(tmp):
    """Files in every layout a photo may come in, from a photo crop (odd size) and noise."""
    rng = np.random.default_rng(99)
    photo = Image.open(SKIMAGE + "astronaut.png").convert("RGB").crop((3, 5, 260, 306))
    out = []

    def save(name, im, **kw):
        path = os.path.join(tmp, name)
        im.save(path, **kw)
        out.append(path)

    save("q85_420.jpg", photo, quality=85)
    save("q75_422.jpg", photo, quality=75, subsampling=1)
    save("q95_444.jpg", photo, quality=95, subsampling=0)
    save("progressive.jpg", photo, quality=80, progressive=True)
    save("optimized.jpg", photo, quality=70, optimize=True)
    save("gray.jpg", photo.convert("L"), quality=90)
    save("cmyk.jpg", photo.convert("CMYK"), quality=90)
    save("cmyk_noise.jpg", Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "CMYK"), quality=95)
    save("noise_q50.jpg", Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)), quality=50)
    save("palette.png", photo.convert("P", palette=Image.ADAPTIVE))
    save("palette_trns.png", photo.convert("P", palette=Image.ADAPTIVE), transparency=3)
    save("gray_alpha.png", photo.convert("LA"))
    save("bilevel.png", photo.convert("1"))
    g2 = rng.integers(0, 4, (11, 16)).astype(np.uint8)
    out.append(png_file(os.path.join(tmp, "gray2bit.png"), 16, 11, 2, 0, lambda x0, y0, dx, dy: b"".join(
        b"\0" + bytes((r[i] << 6) | (r[i + 1] << 4) | (r[i + 2] << 2) | r[i + 3] for i in range(0, 16, 4))
        for r in g2)))
    a16 = rng.integers(0, 65536, (20, 30, 3)).astype(">u2")
    out.append(png_file(os.path.join(tmp, "rgb16.png"), 30, 20, 16, 2, lambda x0, y0, dx, dy: b"".join(
        b"\0" + r.tobytes() for r in a16)))
    # GIF: PIL's palettes, transparency (the colour is kept), interlace, an animation (its
    # first frame), a gray palette; hand-edited: a frame placed inside a larger screen (with
    # and without a transparent index: what fills the rest), a frame sticking out of the
    # screen (the canvas grows), a colour table shorter than the indices used.
    pal = photo.convert("P", palette=Image.ADAPTIVE)
    save("adaptive.gif", pal)
    save("web_palette.gif", photo.convert("P"))
    save("transparent.gif", pal, transparency=5)
    save("interlaced.gif", pal, interlace=True)
    save("animation.gif", pal, save_all=True, append_images=[photo.rotate(90).convert("P", palette=Image.ADAPTIVE)])
    save("gray.gif", photo.convert("L"))
    small = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE,
                                                                                       colors=32)
    out.append(gif_edit(os.path.join(tmp, "frame_inside.gif"), small, (10, 8), (2, 3)))
    out.append(gif_edit(os.path.join(tmp, "frame_inside_transparent.gif"), small, (10, 8), (2, 3), transparency=2))
    out.append(gif_edit(os.path.join(tmp, "frame_outside.gif"), small, (5, 3), (2, 1)))
    out.append(gif_short_palette(os.path.join(tmp, "short_palette.gif")))
    # WebP (PIL decodes all of them with libwebp's animation decoder, RGBA): lossy, lossless,
    # noise, gray (stored as YUV), alpha with every value (lossy: the alpha plane compressed
    # apart; lossless), an extended (VP8X) still image with EXIF, animations (the first frame).
    alpha = np.asarray(photo.convert("RGBA")).copy()
    alpha[..., 3] = rng.integers(0, 256, alpha.shape[:2])
    rgba = Image.fromarray(alpha, "RGBA")
    save("lossy.webp", photo, quality=80)
    save("lossless.webp", photo, lossless=True)
    save("noise_q50.webp", Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)), quality=50)
    save("gray.webp", photo.convert("L"), quality=90)
    save("alpha_lossy.webp", rgba, quality=70)
    save("alpha_lossless.webp", rgba, lossless=True)
    save("exif.webp", photo, quality=85, exif=b"Exif\0\0II*\0\x08\0\0\0\0\0\0\0\0\0")
    save("animation.webp", photo, save_all=True, append_images=[photo.rotate(90)], quality=80)
    save("animation_alpha.webp", rgba, save_all=True, append_images=[photo.rotate(90)], lossless=True)
    # BMP: 24-bit, palette, gray, 1-bit, RGBA (32-bit).
    save("rgb.bmp", photo)
    save("palette.bmp", pal)
    save("gray.bmp", photo.convert("L"))
    save("bilevel.bmp", photo.convert("1"))
    save("rgba.bmp", photo.convert("RGBA"))
    a8 = np.asarray(photo)[:45, :37]
    out.append(png_file(os.path.join(tmp, "adam7.png"), 37, 45, 8, 2, lambda x0, y0, dx, dy: b"".join(
        b"\0" + a8[y, x0::dx].tobytes() for y in range(y0, 45, dy)) if x0 < 37 and y0 < 45 else b"", interlace=1))
    return out


def check_decoding(trick, path, out):
    """Exact equality with PIL's convert("RGB") and convert("L")."""
    name = os.path.basename(path)
    im = Image.open(path)
    for mode, extra in (("RGB", []), ("L", ["--gray"])):
        raw = preprocess(trick, path, out, "--input-size", "raw", *extra).astype(np.float64)
        if mode == "L":
            raw = raw[..., 0]
        ours = np.round(raw * 255)
        want = np.asarray(im.convert(mode), dtype=np.float64)
        check(ours.shape == want.shape, f"{name}: decoded {mode} shape {ours.shape}, PIL {want.shape}")
        check(np.abs(raw * 255.0 - ours).max() < 1e-3, f"{name}: decoded values not k/255")
        same = ours.shape == want.shape and np.array_equal(ours, want)
        check(same, f"{name}: decoded {mode} differs from PIL's convert('{mode}')")
    return im


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

        # 1. decoding, exact.
        check_decoding(trick, path, out)

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

    # 1 for the other layouts (and rocket.jpg: a real camera JPEG), decoding only.
    print(f"{'decoding only':28} {'size':>9} {'mode':>4}  RGB and L equal PIL's")
    for path in [SKIMAGE + "rocket.jpg"] + decode_variants(tmp):
        im = check_decoding(trick, path, out)
        print(f"{os.path.basename(path):28} {im.width:4}x{im.height:<4} {im.mode:>4}  "
              f"{'no' if any(os.path.basename(path) + ':' in f for f in failures) else 'yes'}")

    # A 16-bit gray PNG: the high byte of each sample (PIL's convert clips "I" values to 255,
    # which makes most such images white; we keep the image instead).
    g16 = np.random.default_rng(5).integers(0, 65536, (9, 14)).astype(">u2")
    path = png_file(os.path.join(tmp, "gray16.png"), 14, 9, 16, 0, lambda x0, y0, dx, dy: b"".join(
        b"\0" + r.tobytes() for r in g16))
    raw = np.round(preprocess(trick, path, out, "--input-size", "raw", "--gray").astype(np.float64)[..., 0] * 255)
    check(np.array_equal(raw, (g16.astype(np.int64) >> 8).astype(np.float64)), "gray16.png: not the high bytes")

    # 6. the decoders trick runs are PIL's.
    from PIL import features
    info = run_trick(trick, ["info"]).stdout
    line = next((l for l in info.splitlines() if l.startswith("images: ")), "")
    print(line)
    for lib, feature in (("libjpeg-turbo", "libjpeg_turbo"), ("libwebp", "webp")):
        want = f"({lib} {features.version(feature)})"
        check(want in line, f"trick info: {want} not in {line!r} (PIL's {lib}: the pixels may differ)")

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
