#!/usr/bin/python3
"""`trick convert` against PyTorch: a state dict saved by torch in both .pth formats must come
out of the converter as float32 safetensors with exactly torch's values.

Usage: formats_check.py PATH/TO/trick

The safetensors output is parsed here by hand (struct + json + numpy), not by our reader, so
the reader and the writer cannot agree on a mistake. Exits non-zero with a message on the
first mismatch.
"""
import collections
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch

TRICK = sys.argv[1] if len(sys.argv) > 1 else "build/trick"
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)
    return cond


def state_dict():
    g = torch.Generator().manual_seed(1234)
    r = lambda *s: torch.randn(*s, generator=g)
    sd = collections.OrderedDict()
    sd["Conv2d_1a_3x3.conv.weight"] = r(8, 3, 3, 3)  # OIHW, kept as is
    sd["Conv2d_1a_3x3.bn.weight"] = r(8)
    sd["Conv2d_1a_3x3.bn.bias"] = r(8)
    sd["Conv2d_1a_3x3.bn.running_mean"] = r(8)
    sd["Conv2d_1a_3x3.bn.running_var"] = r(8).abs() + 0.5
    sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(123)  # int64: skipped
    sd["Mixed_7c.branch_pool.conv.weight"] = r(5, 7, 1, 1)  # an Inception v3 key (but not its shape)
    sd["transposed"] = r(6, 9).t()  # non-contiguous, saved as is
    big = r(100)
    sd["offset_view"] = big[7:37].view(5, 6)  # storage offset 7 into a 100-element storage
    sd["offset_view2"] = big[50:53]  # the same storage again
    sd["permuted4d"] = r(4, 6, 5, 3).permute(0, 3, 1, 2)  # 4-D with odd strides
    sd["every_other"] = r(20)[::2]  # stride 2
    sd["half"] = torch.cat([r(12), torch.tensor([float("inf"), -0.0, 6e-8, 65504.0])]).half().view(4, 4)
    sd["bfloat16"] = r(3, 5).bfloat16()
    sd["double"] = r(2, 3, 4).double()
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(r(3))  # pickled through _rebuild_parameter
    sd["fc.weight"] = r(10, 20)
    sd["fc.bias"] = r(10)
    return sd


def read_safetensors(path):
    """(header dict without metadata, metadata, {name: float32 array}) parsed by hand."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    check(n % 8 == 0, f"{path}: header length {n} is not a multiple of 8")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    arrays = collections.OrderedDict()
    end = 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, en = e["data_offsets"]
        check(e["dtype"] == "F32", f"{path}: {name} has dtype {e['dtype']}")
        check(b == end, f"{path}: {name} begins at {b}, previous tensor ended at {end}")
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        check(en - b == 4 * count, f"{path}: {name} byte size {en - b} != 4 x {count}")
        arrays[name] = np.frombuffer(data, dtype="<f4", count=count, offset=b).reshape(e["shape"])
        end = en
    check(end == len(data), f"{path}: data section is {len(data)} bytes, tensors end at {end}")
    return list(header.keys()), meta, arrays


def expected_arrays(sd):
    return collections.OrderedDict(
        (k, v.detach().float().contiguous().numpy()) for k, v in sd.items() if v.is_floating_point())


def compare(label, got, want):
    check(list(got.keys()) == list(want.keys()), f"{label}: tensor names/order {list(got)} != {list(want)}")
    for k, w in want.items():
        if k not in got:
            continue
        g = got[k]
        if not check(g.shape == w.shape, f"{label}: {k} shape {g.shape} != torch {w.shape}"):
            continue
        # Bitwise: the conversion must be exact (float16/bfloat16/float64 -> float32 as torch does).
        same = np.array_equal(g.view(np.uint32), w.view(np.uint32))
        if not same:
            bad = np.flatnonzero(g.view(np.uint32).ravel() != w.view(np.uint32).ravel())[:5]
            check(False, f"{label}: {k} differs at flat indices {bad.tolist()}: "
                         f"got {g.ravel()[bad].tolist()} want {w.ravel()[bad].tolist()}")


def run(args):
    p = subprocess.run([TRICK] + args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def expect_error(label, path, out, must_contain=None):
    rc, so, se = run(["convert", path, "-o", out])
    check(rc == 1, f"{label}: trick convert exited {rc} on a bad file (want 1; negative: a signal)\n{so}{se}")
    lines = [l for l in se.splitlines() if l.startswith("error:")]
    check(len(lines) == 1 and path in lines[0], f"{label}: expected one 'error: ...{path}...' line, got {se!r}")
    if must_contain:
        check(must_contain in se, f"{label}: error does not mention {must_contain!r}: {se!r}")
    check(not os.path.exists(out), f"{label}: {out} was left behind")
    print(f"ok {label}: {lines[0] if lines else se.strip()}")


def main():
    with tempfile.TemporaryDirectory(prefix="trick-formats-") as tmp:
        sd = state_dict()
        want = expected_arrays(sd)
        zip_pth = os.path.join(tmp, "weights_zip.pth")
        legacy_pth = os.path.join(tmp, "weights_legacy.pth")
        torch.save(sd, zip_pth)
        torch.save(sd, legacy_pth, _use_new_zipfile_serialization=False)
        check(open(zip_pth, "rb").read(4) == b"PK\x03\x04", "torch did not write a zip archive")
        check(open(legacy_pth, "rb").read(2) == b"\x80\x02", "torch did not write a legacy pickle stream")

        # Without --model, Inception v3's keys make convert check the file as one: this is not.
        rc, so, se = run(["convert", zip_pth, "-o", os.path.join(tmp, "not-inception.safetensors")])
        check(rc == 1 and se.startswith("error: " + zip_pth + ": ") and se.count("\n") == 1,
              f"convert took a file with an Inception key as Inception v3 without checking it: rc {rc}, {se}")
        check(not os.path.exists(os.path.join(tmp, "not-inception.safetensors")), "a refused convert wrote its output")
        # Both formats, with an explicit model name (the metadata's "model").
        for label, pth, model_arg, model in [("zip", zip_pth, ["--model", "my_zip_net"], "my_zip_net"),
                                             ("legacy", legacy_pth, ["--model", "my_net"], "my_net")]:
            out = os.path.join(tmp, f"{label}.safetensors")
            rc, so, se = run(["convert", pth, "-o", out] + model_arg)
            if not check(rc == 0, f"{label}: trick convert failed (rc {rc}): {se}"):
                continue
            print(f"{label}: {so.strip()}")
            check("skipped 1 integer tensor" in so, f"{label}: summary does not report the skipped int64: {so!r}")
            check(f"{len(want)} tensors" in so, f"{label}: summary does not say {len(want)} tensors: {so!r}")
            params = sum(int(a.size) for a in want.values())
            check(f"{params} parameters" in so, f"{label}: summary does not say {params} parameters: {so!r}")
            _, meta, got = read_safetensors(out)
            compare(label, got, want)
            check(meta == {"format": "pt", "model": model, "source": os.path.basename(pth), "converted_by": "trick"},
                  f"{label}: metadata {meta}")
            print(f"ok {label}: {len(got)} tensors bit-identical to torch, metadata {meta}")

        # The same archive rewritten with every size and offset in zip64 extra fields (what a
        # file over 4 GiB has), and a zip64 end-of-central-directory record.
        z64 = os.path.join(tmp, "weights_zip64.pth")
        rewrite_as_zip64(zip_pth, z64)
        with zipfile.ZipFile(z64) as zf:  # Python's zipfile agrees it is a valid archive
            check(zf.testzip() is None, "zip64 rewrite: zipfile reports a bad entry")
        out = os.path.join(tmp, "zip64.safetensors")
        rc, so, se = run(["convert", z64, "-o", out, "--model", "my_zip_net"])
        if check(rc == 0, f"zip64: trick convert failed (rc {rc}): {se}"):
            compare("zip64", read_safetensors(out)[2], want)
            print(f"ok zip64: {so.strip()}")

        # safetensors in: our own output again, and a hand-written file with other dtypes.
        again = os.path.join(tmp, "again.safetensors")
        rc, so, se = run(["convert", os.path.join(tmp, "zip.safetensors"), "-o", again, "--model", "my_zip_net"])
        if check(rc == 0, f"safetensors->safetensors failed: {se}"):
            compare("safetensors->safetensors", read_safetensors(again)[2], want)
        mixed = collections.OrderedDict(
            [("a16", np.array([[1.5, -2.0], [6e-8, 65504.0]], np.float16)),
             ("b64", np.arange(6, dtype=np.float64).reshape(2, 3) / 7),
             ("c32", np.arange(5, dtype=np.float32) - 2.5),
             ("steps", np.array([7], np.int64))])
        mixed_path = os.path.join(tmp, "mixed.safetensors")
        write_safetensors_by_hand(mixed_path, mixed, bf16={"d_bf16": np.array([1.0, -3.5, 0.15625], np.float32)})
        mixed_out = os.path.join(tmp, "mixed_out.safetensors")
        rc, so, se = run(["convert", mixed_path, "-o", mixed_out])
        if check(rc == 0, f"mixed safetensors convert failed: {se}"):
            check("skipped 1 integer tensor" in so, f"mixed: summary {so!r}")
            _, meta, got = read_safetensors(mixed_out)
            want_mixed = collections.OrderedDict(
                [("a16", mixed["a16"].astype(np.float32)), ("b64", mixed["b64"].astype(np.float32)),
                 ("c32", mixed["c32"]), ("d_bf16", np.array([1.0, -3.5, 0.15625], np.float32))])
            compare("mixed safetensors", got, want_mixed)
            check(meta.get("model") == "unknown", f"mixed: model {meta.get('model')} (expected unknown)")
            print(f"ok mixed safetensors (F16, F64, BF16, F32; I64 skipped): {so.strip()}")

        # Bad inputs: one error line naming the file, non-zero exit, no output file.
        for label, pth in [("zip", zip_pth), ("legacy", legacy_pth)]:
            blob = open(pth, "rb").read()
            for cut in [len(blob) - 1, len(blob) // 2, 40, 1]:
                bad = os.path.join(tmp, f"truncated_{label}_{cut}.pth")
                open(bad, "wb").write(blob[:cut])
                expect_error(f"{label} truncated to {cut} bytes", bad, bad + ".safetensors")
        deflated = os.path.join(tmp, "deflated.pth")
        with zipfile.ZipFile(zip_pth) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        expect_error("deflate-compressed zip", deflated, deflated + ".safetensors", "compressed")
        whole_model = os.path.join(tmp, "whole_model.pth")
        torch.save(torch.nn.Linear(3, 2), whole_model)
        expect_error("pickled nn.Module", whole_model, whole_model + ".safetensors", "disallowed global")
        empty = os.path.join(tmp, "empty.pth")
        open(empty, "wb").close()
        expect_error("empty file", empty, empty + ".safetensors")
        noise = os.path.join(tmp, "noise.pth")
        open(noise, "wb").write(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        expect_error("random bytes", noise, noise + ".safetensors")
        leftovers = [f for f in os.listdir(tmp) if ".tmp-" in f]
        check(not leftovers, f"temporary files left behind: {leftovers}")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all format checks passed")
    return 0


def rewrite_as_zip64(src, dst):
    """Copies a stored zip archive, forcing zip64: sizes and offsets saturated at 0xFFFFFFFF
    in the headers with the real values in zip64 extra fields, plus 64-bit end records."""
    import zlib
    with zipfile.ZipFile(src) as zf:
        entries = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        crc, nb, offset = zlib.crc32(data), name.encode(), len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(nb),
                           len(local_extra)) + nb + local_extra + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nb), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + extra
    cd_offset = len(out)
    out += central
    eocd64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central),
                       cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    open(dst, "wb").write(bytes(out))


def write_safetensors_by_hand(path, arrays, bf16=None):
    """A safetensors file with numpy dtypes (and bfloat16 from float32 by truncation)."""
    names = {np.dtype(np.float16): "F16", np.dtype(np.float64): "F64", np.dtype(np.float32): "F32",
             np.dtype(np.int64): "I64"}
    header, chunks, off = {}, [], 0
    items = [(k, names[a.dtype], a.shape, a.astype(a.dtype.newbyteorder("<")).tobytes()) for k, a in arrays.items()]
    for k, a in (bf16 or {}).items():  # exact in bfloat16 by construction
        items.append((k, "BF16", a.shape, (a.view(np.uint32) >> 16).astype("<u2").tobytes()))
    for k, dt, shape, raw in items:
        header[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


if __name__ == "__main__":
    sys.exit(main())
