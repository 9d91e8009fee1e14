#!/usr/bin/python3
"""Writes the committed seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

Small valid files of every variant each reader handles (so the fuzzer starts from deep
inside every code path) and a few near-valid ones. Made with the real producers where there
is one (torch.save, PIL, numpy, gzip) and by hand otherwise. Run once by hand when a reader
learns a new variant (needs Debian's python3-torch, -pil, -numpy); the output is committed.

usage: make_corpus.py [OUT_DIR]   (default: corpus/ beside this script)
"""
import gzip
import io
import json
import os
import struct
import sys

import numpy as np
import PIL.Image
import torch

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(entries, meta=None, pad=True):
    header, off, blobs = {}, 0, []
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    rng = np.random.default_rng(1)
    f32 = lambda *s: rng.standard_normal(s).astype("<f4")

    # ---- safetensors
    put("safetensors", "two_f32.safetensors", safetensors(
        [("fc.weight", "F32", [3, 2], f32(3, 2).tobytes()), ("fc.bias", "F32", [3], f32(3).tobytes())],
        {"model": "inception_v3", "format": "pt"}))
    put("safetensors", "half_types.safetensors", safetensors(
        [("h", "F16", [2, 2], f32(4).astype("<f2").tobytes()),
         ("b", "BF16", [3], (f32(3).view("<u4") >> 16).astype("<u2").tobytes()),
         ("d", "F64", [2], rng.standard_normal(2).astype("<f8").tobytes())]))
    put("safetensors", "odd_shapes.safetensors", safetensors(
        [("scalar", "F32", [], f32(1).tobytes()), ("empty", "F32", [0, 3], b""),
         ("five_d", "F32", [1, 1, 1, 2, 1], f32(2).tobytes()), ("steps", "I64", [1], struct.pack("<q", 7)),
         ("flags", "BOOL", [2], b"\x01\x00"), ("unaligned", "F32", [1], f32(1).tobytes())]))
    put("safetensors", "unpadded.safetensors", safetensors([("a", "F32", [1], f32(1).tobytes())], pad=False))
    good = safetensors([("a", "F32", [2], f32(2).tobytes()), ("b", "F32", [2], f32(2).tobytes())])
    put("safetensors", "overlap.safetensors", good.replace(b'"data_offsets": [8, 16]', b'"data_offsets": [4, 12]'))
    put("safetensors", "truncated.safetensors", good[:-3])

    # ---- .pth (torch.save, both formats)
    g = torch.Generator().manual_seed(2)
    sd = {"conv.weight": torch.randn(2, 3, 1, 1, generator=g), "bn.running_var": torch.rand(2, generator=g),
          "bn.num_batches_tracked": torch.tensor(5), "t": torch.randn(3, 4, generator=g).t(),
          "half": torch.randn(3, generator=g).half(), "bf": torch.randn(2, generator=g).bfloat16(),
          "dbl": torch.randn(2, generator=g).double(), "view": torch.randn(10, generator=g)[2:6],
          "p": torch.nn.Parameter(torch.randn(2, generator=g)), "empty": torch.zeros(0, 2)}
    for legacy in (False, True):
        b = io.BytesIO()
        torch.save(sd, b, _use_new_zipfile_serialization=not legacy)
        put("pth", "state_dict_%s.pth" % ("legacy" if legacy else "zip"), b.getvalue())
    b = io.BytesIO()
    torch.save({"w": torch.ones(2), "lr": 0.1}, b)
    put("pth", "checkpoint_float.pth", b.getvalue())
    b = io.BytesIO()
    torch.save({"w": torch.ones(1)}, b, _use_new_zipfile_serialization=False)
    put("pth", "tiny_legacy.pth", b.getvalue())

    # ---- images (tiny, every variant the decoders handle: libjpeg, libpng, giflib, libwebp, stb
    # for BMP)
    px = (rng.random((9, 13, 3)) * 255).astype(np.uint8)
    rgb = PIL.Image.fromarray(px, "RGB")

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("image", "rgb.png", save(rgb, "PNG"))
    put("image", "gray.png", save(rgb.convert("L"), "PNG"))
    put("image", "rgba.png", save(rgb.convert("RGBA"), "PNG"))
    put("image", "palette.png", save(rgb.convert("P"), "PNG"))
    put("image", "optimized.png", save(rgb, "PNG", optimize=True))
    put("image", "gray16.png", save(PIL.Image.fromarray((px[:, :, 0].astype(np.uint16) * 257), "I;16"), "PNG"))
    put("image", "baseline.jpg", save(rgb, "JPEG", quality=80))
    put("image", "progressive.jpg", save(rgb, "JPEG", quality=80, progressive=True))
    put("image", "gray.jpg", save(rgb.convert("L"), "JPEG"))
    put("image", "subsampled.jpg", save(rgb.resize((17, 11)), "JPEG", subsampling=2))
    put("image", "cmyk.jpg", save(rgb.convert("CMYK"), "JPEG"))
    put("image", "image.gif", save(rgb.convert("P"), "GIF"))
    put("image", "rgb24.bmp", save(rgb, "BMP"))
    put("image", "palette8.bmp", save(rgb.convert("P"), "BMP"))
    put("image", "truncated.jpg", save(rgb, "JPEG")[:200])
    put("image", "lossy.webp", save(rgb, "WEBP", quality=80))
    put("image", "lossless-alpha.webp", save(rgb.convert("RGBA"), "WEBP", lossless=True))
    put("image", "animation.webp", save(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(90)]))

    # ---- .npy
    def npy(a, version=None):
        b = io.BytesIO()
        if version:
            np.lib.format.write_array(b, a, version=version)
        else:
            np.save(b, a)
        return b.getvalue()

    put("npy", "f32_3d.npy", npy(f32(2, 3, 4)))
    put("npy", "f32_4d.npy", npy(f32(1, 2, 2, 3)))
    put("npy", "f32_0d.npy", npy(np.float32(1.5).reshape(())))
    put("npy", "f32_empty.npy", npy(np.zeros((0, 3), "<f4")))
    put("npy", "v2.npy", npy(f32(3), version=(2, 0)))
    put("npy", "v3.npy", npy(f32(2), version=(3, 0)))
    put("npy", "fortran.npy", npy(np.asfortranarray(f32(2, 3))))
    put("npy", "f64.npy", npy(rng.standard_normal(3)))
    put("npy", "big_endian.npy", npy(f32(3).astype(">f4")))

    # ---- IDX (images 0x803, labels 0x801; plain and gzip)
    imgs = struct.pack(">IIII", 0x803, 3, 4, 5) + bytes(rng.integers(0, 256, 60, dtype=np.uint8))
    labels = struct.pack(">II", 0x801, 3) + bytes([1, 9, 0])
    put("idx", "images-idx3-ubyte", imgs)
    put("idx", "images-idx3-ubyte.gz", gzip.compress(imgs, mtime=0))
    put("idx", "labels-idx1-ubyte", labels)
    put("idx", "labels-idx1-ubyte.gz", gzip.compress(labels, mtime=0))
    put("idx", "labels-out-of-range", struct.pack(">II", 0x801, 2) + bytes([3, 12]))
    put("idx", "short-images", imgs[:-7])


if __name__ == "__main__":
    main()
