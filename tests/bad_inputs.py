#!/usr/bin/python3
"""The bad-input corpus: every input `trick` reads, made wrong one at a time, through every command.

Each case runs one `trick` command line in a fresh directory with exactly one input made bad
and everything else good, and checks that the command failed cleanly:
  - exit status 1 (a library error) or 2 (a command-line mistake), not a signal;
  - stderr has exactly one line starting with "error:", which names the offending file (or
    option) as given on the command line and says what is wrong (a per-case pattern);
  - no crash: no sanitizer report, no "terminate called", no segfault message;
  - nothing left behind: the case directory (inputs and output location) is byte-for-byte
    unchanged, in particular no *.tmp-* temporaries, and an output that existed is untouched.
For every command a "control" case runs the same command line with all inputs good and must
succeed, so a bad case cannot pass because the good inputs were broken to begin with.

Adding a command is one line in COMMANDS: its command line with placeholders. The placeholders
it uses decide which families of bad inputs it gets ({image}: images, {weights}: model weights,
{weights_in}: any weight file to convert, {weights_pth}: a PyTorch .pth model read directly,
{good_image}: an image that gets no bad cases, {target}: class names, {out.EXT}: an output file,
{outdir}: an output folder, {idx_dir}: a Fashion-MNIST folder of IDX files, {manifest}: a CSV of jobs). Command-specific
option cases go in OPTION_CASES. A command listed here that this build of trick lacks fails,
unless it is in PENDING (one still being written), whose cases skip, saying so.

Not covered, on purpose: NaN/Inf in images. PNG, JPEG, GIF, WebP and BMP store integer samples, so an
image file cannot hold a NaN; the float paths are covered by NaN weights here and by the
non-finite tests of the image and render code.

Usage:
  bad_inputs.py list                          case ids ("classify truncated-png"), one a line (CMake)
  bad_inputs.py setup TRICK DIR               the fixture: torchvision Inception v3 weights and small
                                              .pth files made with torch (Debian's /usr/bin/python3)
  bad_inputs.py run TRICK DIR COMMAND CASE    one case
  bad_inputs.py all TRICK DIR [-j N] [-v] [--only REGEX] [--distinct] [--slowest N]
                                              setup if needed, then every case; -v prints each
                                              case's error line, --distinct runs every command's
                                              control but each bad input through one command only
                                              (the sanitizer run), --slowest the N cases that took
                                              longest and the commands' totals
Exit status: 0 pass, 1 fail, 77 skipped (the case cannot run here; the reason is printed).
"""
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
import threading
import zipfile
import zlib

SKIP = 77
SKIMAGE = "/usr/lib/python3/dist-packages/skimage/data"
FIXTURE_VERSION = "2"  # bump when setup() makes different files

# ---- the commands ------------------------------------------------------------------------------

# name: the command line with every input good (its first word is the subcommand). {out.EXT}
# is an output file with that extension.
COMMANDS = {
    "classify": "classify {image} --weights {weights}",
    "classify_pth": "classify {good_image} --weights {weights_pth}",  # .pth read directly
    "grad": "grad {image} --weights {weights} --target {target} --out {out.npy}",
    # One mode: each is a forward and backward more (under the sanitizers too). {good_image}:
    # its images go through load_image as classify's and grad's do, and each bad image case
    # costs a load of Inception v3 (1-2 s under ASan; CI's 20 minutes).
    "precision": "precision {good_image} --weights {weights} --target {target} --modes tf32 --device cpu",
    "preprocess": "preprocess {image} --out {out.npy}",
    "convert": "convert {weights_in} -o {out.safetensors}",
    "bench": "bench --weights {weights} --repeats 1 --warmup 0",
    "bench_layers": "bench --model fashion_inception --batch 2 --repeats 1 --warmup 0 --layers --layers-json {out.jsonl}",
    # One small layer: all six, summed in double, took 52 s under ASan (the longest case).
    "bench_conv": "bench-conv --repeats 1 --threads 1 --layers Mixed_7b-7c.branch3x3dbl_2",
    "classes": "classes",
    "info": "info",
    "attack": "attack {image} --weights {weights} --target {target} --out {outdir} --method fgsm --no-animation "
              "--refine-steps 0",
    "attack_manifest": "attack --manifest {manifest} --out {outdir} --method fgsm --no-animation --refine-steps 0",
    "eval_weights": "eval --data {good_idx_dir} --weights {weights_fashion} --threads 1 --limit 16",
    "train": "train --data {idx_dir} --out {out.safetensors} --steps 1 --batch 16 --test-limit 16 --threads 1",
    "eval": "eval --data {idx_dir} --threads 1",
}

# Exit statuses of a successful control run other than 0 (attack: 3 = the target was not
# reached, which random weights and one FGSM step do not promise).
CONTROL_STATUS = {"attack": (0, 3), "attack_manifest": (0, 3)}

# Commands whose --out is a checkpoint they refuse to overwrite without --resume: their bad
# cases start without it (elsewhere a previous result exists and must survive the failure).
OUT_IS_A_CHECKPOINT = {"train"}

# Commands whose inputs are all optional (no "no-arguments" case).
RUNS_WITHOUT_ARGUMENTS = {"bench", "bench_layers", "bench_conv", "eval", "eval_weights"}

# (command, case, options set on the good command line (replacing the value of one it has, else
#  appended), what the error must name, pattern of what it must say is wrong)
OPTION_CASES = [
    ("classify", "topk-zero", ["--topk", "0"], "--topk", r"at least 1"),
    ("classify", "topk-negative", ["--topk", "-5"], "--topk", r"at least 1"),
    ("classify", "topk-not-a-number", ["--topk", "many"], "--topk", r"many|integer|number|convert"),
    ("classify", "input-size-unknown", ["--input-size", "huge"], "--input-size", r"must be 'raw'"),
    ("classify", "input-size-raw-wrong-size", ["--input-size", "raw"], "good.png", r"299|input"),
    ("classify", "device-unknown", ["--device", "tpu"], "tpu", r"cannot parse .*expected cpu, cuda"),
    ("classify", "device-cuda-99", ["--device", "cuda:99"], "--device", r"CUDA|cuda"),
    ("classify", "tf32-with-bf16", ["--tf32", "--bf16"], "--tf32", r"excludes --bf16"),
    ("attack", "bf16-with-tf32", ["--bf16", "--tf32"], "--bf16", r"excludes"),
    ("precision", "modes-unknown", ["--modes", "fp16"], "--modes", r"unknown 'fp16'"),
    ("precision", "modes-fp32", ["--modes", "tf32,fp32"], "--modes", r"fp32 is the reference"),
    ("precision", "modes-twice", ["--modes", "bf16,bf16"], "--modes", r"named twice"),
    ("grad", "input-size-unknown", ["--input-size", "huge"], "--input-size", r"must be 'raw'"),
    ("grad", "device-unknown", ["--device", "tpu"], "tpu", r"cannot parse .*expected cpu, cuda"),
    ("preprocess", "crop-negative", ["--crop", "-1"], "--crop", r"-1 not in range"),
    ("preprocess", "resize-negative", ["--resize-shorter", "-5"], "--resize-shorter", r"-5 not in range"),
    ("preprocess", "crop-larger-than-image", ["--resize-shorter", "10", "--crop", "50"], "crop",
     r"does not fit"),
    ("preprocess", "input-size-zero", ["--input-size", "0x5"], "--input-size", r"positive"),
    ("preprocess", "input-size-garbage", ["--input-size", "12xy"], "--input-size", r"expected"),
    ("preprocess", "raw-with-crop", ["--input-size", "raw", "--crop", "5"], "--input-size",
     r"cannot be combined"),
    # A list starting with the command's name is the whole command line (bench's good one
    # already has --repeats and --warmup, and no --weights means random weights).
    ("bench", "batch-zero", ["bench", "--batch", "0"], "--batch", r"\[1, 4096\]"),
    ("bench", "batch-huge", ["bench", "--batch", "100000"], "--batch", r"\[1, 4096\]"),
    ("bench", "repeats-zero", ["bench", "--repeats", "0"], "--repeats", r"at least 1"),
    ("bench", "warmup-negative", ["bench", "--warmup", "-1"], "--warmup", r"at least 0"),
    ("bench", "threads-negative", ["bench", "--threads", "-2"], "--threads", r"-2 not in range 0 to 1024"),
    ("bench", "seed-negative", ["bench", "--seed", "-1"], "--seed", r"not a whole number"),
    ("bench", "device-unknown", ["bench", "--device", "tpu"], "tpu", r"cannot parse .*expected cpu, cuda"),
    ("bench", "model-unknown", ["bench", "--model", "resnet50"], "resnet50", r"unknown model"),
    ("bench", "cpu-conv-unknown", ["bench", "--cpu-conv", "fast"], "--cpu-conv", r"winograd, winograd4, packed or blas"),
    ("bench_conv", "engines-unknown", ["--engines", "packed,fast"], "--engines", r"winograd, winograd4, packed or blas"),
    ("bench_conv", "batch-zero", ["--batch", "0"], "--batch", r"0 not in range"),
    ("bench_conv", "batch-huge", ["--batch", "65"], "--batch", r"65 not in range 1 to 64"),
    ("bench_conv", "repeats-zero", ["--repeats", "0"], "--repeats", r"0 not in range"),
    ("bench_conv", "layers-unknown", ["--layers", "Conv2d_9z_3x3"], "--layers",
     r"'Conv2d_9z_3x3' is not one of the layers timed here: Conv2d_2a_3x3, "),
    ("classify", "cpu-conv-unknown", ["--cpu-conv", "direct"], "--cpu-conv", r"winograd, winograd4, packed or blas"),
    ("bench", "layers-with-both", ["--layers", "--both"], "--layers", r"excludes"),
    ("bench", "layers-json-without-layers", ["--layers-json", "layers.jsonl"], "--layers-json", r"requires"),
    ("classes", "labels-unknown", ["--labels", "cifar"], "--labels", r"expected 'imagenet'"),
    ("attack", "eps-negative", ["--eps", "-1"], "--eps", r"must be positive"),
    ("attack", "eps-zero", ["--eps", "0"], "--eps", r"must be positive"),
    # cw has no budget: an --eps it would ignore (and record) is refused.
    ("attack", "cw-with-restarts", ["--method", "cw", "--restarts", "3"], "--restarts 3", r"not for --method cw"),
    ("attack", "cw-with-eps", ["--method", "cw", "--eps", "16"], "--eps", r"not used by --method cw"),
    # A negative step once fell back silently to the default step.
    ("attack", "step-negative", ["--step", "-1"], "--step", r"\(0, 255\]"),
    ("attack", "threads-negative", ["--threads", "-3"], "--threads", r"-3 not in range 0 to 1024"),
    ("attack", "seed-negative", ["--seed", "-1"], "--seed", r"not a whole number"),
    ("attack", "steps-zero", ["--method", "pgd", "--steps", "0"], "--steps", r"\[1, 100000\]"),
    ("attack", "method-unknown", ["--method", "bogus"], "--method", r"unknown method"),
    ("attack", "norm-unknown", ["--norm", "l3"], "--norm", r"unknown norm"),
    ("attack", "l2-without-eps", ["--method", "pgd", "--norm", "l2"], "--norm l2", r"needs --eps"),
    ("attack", "restarts-without-random-start", ["--method", "bim", "--restarts", "3"], "--restarts 3",
     r"needs a random start"),
    ("attack", "confidence-above-one", ["--confidence", "2"], "--confidence", r"\(0, 1\]"),
    ("attack", "frames-one", ["--frames", "1"], "--frames", r"\[2, 2000\]"),
    ("attack", "frame-width-small", ["--frame-width", "320"], "--frame-width", r"\[480, 8192\]"),
    ("attack", "untargeted-with-target", ["--untargeted"], "--untargeted", r"takes no --target"),
    # A good image, then a missing one: nothing is attacked or written for the first either.
    ("attack", "second-image-missing", ["no-such-second.png"], "no-such-second.png", r"[Nn]o such file"),
    ("train", "epochs-zero", ["--epochs", "0"], "--epochs", r"at least 1"),
    # Written only when the last epoch is done: a wrong folder must fail before the first.
    ("train", "export-missing-folder", ["--export", "no-such-dir/w.safetensors"], "no-such-dir/w.safetensors",
     r"[Nn]o such file or directory"),
    ("grad", "dump-activations-missing-folder", ["--dump-activations", "no-such-dir/a.safetensors"],
     "no-such-dir/a.safetensors", r"[Nn]o such file or directory"),
    ("eval", "samples-is-a-file", ["--samples", "data/t10k-labels-idx1-ubyte.gz"], "data/t10k-labels-idx1-ubyte.gz",
     r"not a directory"),
    ("train", "lr-negative", ["--lr", "-1"], "--lr", r"positive"),
    ("train", "batch-one", ["--batch", "1"], "--batch", r"at least 2"),
    ("train", "optimizer-unknown", ["--optimizer", "bogus"], "bogus", r"unknown optimizer"),
    ("eval", "limit-negative", ["--limit", "-1"], "--limit", r">= 0"),
    ("eval", "threads-negative", ["--threads", "-1"], "--threads", r"-1 not in range 0 to 1024"),
]

# ---- small helpers ------------------------------------------------------------------------------


def die(msg):
    print("FAIL:", msg)
    sys.exit(1)


def rng_bytes(n, seed):
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(w, h, seed=1, width_override=None, height_override=None):
    """An 8-bit RGB PNG of smooth noise (so the IDAT is long enough to cut), written by hand."""
    r = random.Random(seed)
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            row += bytes(((x * 5 + r.randrange(40)) % 256, (y * 3 + r.randrange(40)) % 256, r.randrange(256)))
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", w if width_override is None else width_override,
                       h if height_override is None else height_override, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) +
            png_chunk(b"IEND", b""))


def jpeg_bytes(w, h, progressive=False):
    import PIL.Image  # only the JPEG cases need PIL
    img = PIL.Image.frombytes("RGB", (w, h), png_pixels(w, h))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def png_pixels(w, h, seed=1):
    r = random.Random(seed)
    return bytes(((x * 5 + y + r.randrange(40)) % 256) for y in range(h) for x in range(w) for _ in range(3))


def jpeg_segments(b):
    """[(marker, offset of the 0xFF, total length)] up to the first SOS."""
    out, i = [], 2
    while i + 4 <= len(b):
        m = b[i + 1]
        n = struct.unpack(">H", b[i + 2:i + 4])[0]
        out.append((m, i, 2 + n))
        if m == 0xDA:
            break
        i += 2 + n
    return out


def st_build(tensors, metadata=None, header_override=None):
    """safetensors bytes from [(name, dtype, shape, data bytes)], header written by hand."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = header_override if header_override is not None else json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def st_read(path):
    """(metadata, [(name, dtype, shape, data bytes)]) of a safetensors file, in data order."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    data = memoryview(raw)[8 + n:]
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return meta, [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in items]


def f32(values):
    return struct.pack("<%df" % len(values), *values)


SMALL_TENSORS = [("fc.weight", "F32", [4, 3], f32([0.5] * 12)), ("fc.bias", "F32", [4], f32([0.25] * 4))]


def zip_rewrite(src, dst, edit):
    """Copies the zip `src` to `dst` entry by entry (stored, as torch writes), passing each
    (name, bytes) through edit(name, data) -> bytes, or None to drop the entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def pkl_name(z):
    return next(n for n in zipfile.ZipFile(z).namelist() if n.endswith("/data.pkl"))


# ---- the case context ---------------------------------------------------------------------------


class Ctx:
    """A case's directory (the working directory of the command) and the fixture directory."""

    def __init__(self, case_dir, fixture_dir):
        self.dir = case_dir
        self.fx = fixture_dir
        self.run_as_nobody = False

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return name

    def fixture(self, name):
        return os.path.join(self.fx, name)

    def mkdir(self, name, mode=0o755):
        os.makedirs(os.path.join(self.dir, name))
        os.chmod(os.path.join(self.dir, name), mode)
        return name

    def inception(self):
        return st_read(self.fixture("inception.safetensors"))

    def edit_inception(self, name, edit_tensors, edit_meta=None):
        """A copy of the good Inception weights with its tensor list edited."""

        def make():
            meta, tensors = self.inception()
            tensors = edit_tensors(list(tensors))
            if edit_meta:
                meta = edit_meta(dict(meta or {}))
            return st_build(tensors, meta)

        return self.write_shared(name, (name, edit_tensors, edit_meta), make)

    def write_shared(self, name, key, make):
        """Writes make()'s bytes as `name`, like write(); during `all`, a hard link to one file
        made once for every case with the same key (see Shared)."""
        if SHARED.dir is None:
            return self.write(name, make())
        os.link(SHARED.get(key, make), os.path.join(self.dir, name))
        return name


class Shared:
    """Large inputs made once per `all` run. An edited copy of the Inception weights (100 MB) is
    the same file for each of the six commands that read weights, and making it (read, edit,
    write) and hashing it twice for the unchanged-directory check took about 0.9 s of each of
    those 58 cases. Here each is written once into FIXTURE/shared/ and hard-linked into the
    case directories, and its hash is remembered by inode, size and modification time, so a
    command that wrote to it would still be caught. The cases run grouped by case name (see
    run_all), so only the few most recent files are kept."""

    KEEP = 4

    def __init__(self):
        self.dir = None  # None: every case writes its own files (`run`, one case)
        self.lock = threading.Lock()
        self.files = {}  # key -> path, oldest first
        self.hashes = {}  # (dev, inode, size, mtime_ns) -> sha256 of a file made here
        self.made = 0

    def start(self, fixture_dir):
        self.dir = os.path.join(fixture_dir, "shared")
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)

    def stop(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def get(self, key, make):
        with self.lock:
            path = self.files.pop(key, None)
            if path is None:
                data = make()
                self.made += 1
                path = os.path.join(self.dir, str(self.made))
                with open(path, "wb") as f:
                    f.write(data)
                st = os.lstat(path)
                self.hashes[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = hashlib.sha256(data).hexdigest()
            self.files[key] = path  # now the newest
            while len(self.files) > self.KEEP:  # a case directory keeps its own link
                os.remove(self.files.pop(next(iter(self.files))))
            return path

    def known_hash(self, st):
        return self.hashes.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


SHARED = Shared()


def replace_tensor(tensors, name, fn):
    out, found = [], False
    for t in tensors:
        if t[0] == name:
            t, found = fn(t), True
        if t is not None:
            out.append(t)
    assert found, name
    return out


def poke_f32(data, index, value):
    b = bytearray(data)
    b[4 * index:4 * index + 4] = struct.pack("<f", value)
    return bytes(b)


# ---- the good inputs ---------------------------------------------------------------------------

GOOD = {
    "image": lambda c: c.write("good.png", png_bytes(64, 48)),
    "good_image": lambda c: c.write("good.png", png_bytes(64, 48)),  # an image with no bad cases
    "weights": lambda c: c.fixture("inception.safetensors"),
    "weights_in": lambda c: c.fixture("small.pth"),
    "weights_pth": lambda c: c.fixture("inception.pth"),
    "target": lambda c: "hog",
    "out": lambda c, ext: "out." + ext,
    "outdir": lambda c: "result",
    "idx_dir": lambda c: idx_dir(c),
    "manifest": lambda c: manifest(c, b"image,target\ngood.png,bag\n"),
    "good_idx_dir": lambda c: idx_dir(c),  # a dataset with no bad cases
    "weights_fashion": lambda c: FASHION_WEIGHTS,
}

# ---- the bad inputs, by family -------------------------------------------------------------------
# (case, generator(ctx) -> the value put on the command line, pattern of what is wrong).
# The error line must contain the value itself (the file as given) unless the case says what
# it must name instead (a 4th element).


CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_inputs")


def committed(name):
    """A file committed under tests/bad_inputs/ (findings of the fuzzers), copied into the case."""
    return lambda c: c.write(name, open(os.path.join(CORPUS_DIR, name), "rb").read())


def truncated_jpeg_scan(c):
    j = jpeg_bytes(96, 64)
    sos = [s for s in jpeg_segments(j) if s[0] == 0xDA][0]
    return c.write("truncated-scan.jpg", j[:sos[1] + sos[2] + (len(j) - sos[1] - sos[2]) // 3])


def jpeg_many_scans(c):
    """A progressive JPEG whose first scan is repeated 600 times before EOI: libjpeg warns and
    decodes every repeat (a pass over the whole image each); more than 500 scans are refused."""
    j = jpeg_bytes(64, 48, progressive=True)
    start = [s for s in jpeg_segments(j) if s[0] == 0xDA][0][1]
    end = start + 2
    while not (j[end] == 0xFF and j[end + 1] not in (0x00, 0xFF) and not 0xD0 <= j[end + 1] <= 0xD7):
        end += 1  # the first scan's entropy-coded data runs to the next marker
    eoi = j.rindex(b"\xff\xd9")
    return c.write("many-scans.jpg", j[:eoi] + j[start:end] * 600 + j[eoi:])


def jpeg_huge(c):
    j = bytearray(jpeg_bytes(16, 16))
    sof = [s for s in jpeg_segments(bytes(j)) if s[0] in (0xC0, 0xC2)][0]
    j[sof[1] + 5:sof[1] + 9] = struct.pack(">HH", 65000, 65000)
    return c.write("huge.jpg", bytes(j))


def jpeg_bad_sof(c):
    j = bytearray(jpeg_bytes(16, 16))
    sof = [s for s in jpeg_segments(bytes(j)) if s[0] in (0xC0, 0xC2)][0]
    j[sof[1] + 4] = 12  # sample precision 12: baseline decoders take 8
    return c.write("precision12.jpg", bytes(j))


def png_corrupt(c):
    p = bytearray(png_bytes(64, 48))
    start = p.index(b"IDAT") + 4 + 20  # keep the zlib header, damage the deflate stream
    p[start:start + 64] = rng_bytes(64, 7)
    return c.write("corrupt.png", bytes(p))


def png_bad_header(c):
    p = bytearray(png_bytes(8, 8))
    p[24] = 7  # bit depth 7 does not exist; the CRC is made right, so the header's check is what fails
    p[29:33] = struct.pack(">I", zlib.crc32(bytes(p[12:29])) & 0xFFFFFFFF)
    return c.write("bitdepth7.png", bytes(p))


def bmp_huge(c):
    b = bytearray(b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) +
                  struct.pack("<IiiHHIIiiII", 40, 1 << 30, 1 << 30, 1, 24, 0, 0, 2835, 2835, 0, 0) + b"\0" * 16)
    return c.write("huge.bmp", bytes(b))


def bmp_truncated(c):
    """A 24-bit BMP header declaring 2000 x 1500 pixels, followed by 100 bytes of them."""
    b = b"BM" + struct.pack("<IHHI", 54 + 100, 0, 0, 54) + \
        struct.pack("<IiiHHIIiiII", 40, 2000, 1500, 1, 24, 0, 0, 2835, 2835, 0, 0) + rng_bytes(100, 3)
    return c.write("truncated.bmp", b)


def gif_truncated(c):
    """A GIF of noise (LZW cannot shrink it) cut in the middle of its image data."""
    import PIL.Image
    img = PIL.Image.frombytes("RGB", (64, 48), png_pixels(64, 48)).convert("P", palette=PIL.Image.ADAPTIVE)
    out = io.BytesIO()
    img.save(out, "GIF")
    g = out.getvalue()
    return c.write("truncated.gif", g[:len(g) // 2])


def gif_huge(c):
    g = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b",\0\0\0\0" + struct.pack("<HH", 65535, 65535) + \
        b"\0\x02\x02\x44\x01\0;"
    return c.write("huge.gif", g)


def png_bad_idat_crc(c):
    """Good pixels, but the IDAT chunk's CRC is wrong (one bit flipped in the stored CRC)."""
    p = bytearray(png_bytes(16, 12))
    at = p.index(b"IDAT") - 4
    n = struct.unpack(">I", p[at:at + 4])[0]
    p[at + 8 + n + 3] ^= 1
    return c.write("bad-crc.png", bytes(p))


def bmp_header(bpp, compression, w=4, h=4, data=b"\0" * 64):
    return b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) + \
        struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(data), 2835, 2835, 0, 0) + data


def jpeg_without_scan(c):
    """A JPEG cut right before its first scan (SOS): headers, tables and no pixels."""
    j = jpeg_bytes(32, 24)
    sos = [s for s in jpeg_segments(j) if s[0] == 0xDA][0]
    return c.write("no-scan.jpg", j[:sos[1]])


def gif_bad_code_size(c):
    """A 4x4 GIF whose image's LZW minimum code size is 12 (the format allows 2..8; giflib's
    decoder takes up to 11)."""
    g = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff" + \
        b",\0\0\0\0" + struct.pack("<HH", 4, 4) + b"\0\x0c\x02\x44\x01\0;"
    return c.write("code-size.gif", g)


def webp_bytes(w, h, **kw):
    """A lossy WebP of noise, written by PIL (libwebp)."""
    import PIL.Image
    out = io.BytesIO()
    PIL.Image.frombytes("RGB", (w, h), png_pixels(w, h)).save(out, "WEBP", quality=90, **kw)
    return out.getvalue()


def webp_corrupt(c):
    """A WebP whose VP8 key frame has lost its start code (9d 01 2a)."""
    w = bytearray(webp_bytes(32, 24))
    at = w.index(b"\x9d\x01\x2a")
    w[at:at + 3] = b"\0\0\0"
    return c.write("corrupt.webp", bytes(w))


def webp_huge(c):
    """An extended (VP8X) WebP whose canvas is 16384x16384, holding a 32x24 image."""
    image = webp_bytes(32, 24)[12:]  # the VP8 chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (16383).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + image
    return c.write("huge.webp", b"RIFF" + struct.pack("<I", len(body)) + body)


IMAGE_CASES = [
    ("missing-file", lambda c: "no-such-image.png", r"no such file"),
    ("empty-file", lambda c: c.write("empty.png", b""), r"empty"),
    ("random-bytes", lambda c: c.write("random.png", rng_bytes(4096, 1)), r"not an image"),
    ("html-page", lambda c: c.write("download.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
     r"not an image"),
    ("directory", lambda c: c.mkdir("folder.png"), r"directory"),
    ("truncated-png", lambda c: c.write("truncated.png", png_bytes(64, 48)[:3000]), r"truncated or corrupt PNG"),
    ("corrupt-png", png_corrupt, r"truncated or corrupt PNG"),
    ("png-bad-bit-depth", png_bad_header, r"corrupt PNG"),
    ("png-zero-size", lambda c: c.write("zero.png", png_bytes(4, 4, width_override=0, height_override=0)),
     r"empty size|0x0|corrupt"),
    ("png-huge-size", lambda c: c.write("huge.png", png_bytes(4, 4, width_override=100000, height_override=100000)),
     r"declares a size of 100000x100000"),
    ("truncated-jpeg-skimage", lambda c: c.write("truncated.jpg", open(os.path.join(SKIMAGE, "truncated.jpg"),
                                                                       "rb").read()), r"truncated or corrupt JPEG"),
    ("truncated-jpeg-scan", truncated_jpeg_scan, r"truncated"),
    ("jpeg-12-bit", jpeg_bad_sof, r"corrupt JPEG|12-bit|8-bit"),
    ("jpeg-huge-size", jpeg_huge, r"declares a size of 65000x65000"),
    ("bmp-huge-size", bmp_huge, r"declares a size of"),
    ("truncated-bmp", bmp_truncated, r"truncated or corrupt BMP file \(the pixel data ends early"),
    ("gif-huge-size", gif_huge, r"declares a size of 65535x65535"),
    ("truncated-gif", gif_truncated, r"truncated or corrupt GIF file"),
    ("gif-without-image", lambda c: c.write("empty.gif", b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0) + b";"),
     r"corrupt GIF file \(the file holds no image\)"),
    ("truncated-webp", lambda c: c.write("truncated.webp", webp_bytes(64, 48)[:1000]),
     r"truncated or corrupt WebP file \(the file ends early: its RIFF header says \d+ bytes, the file has 1000\)"),
    ("corrupt-webp", webp_corrupt, r"truncated or corrupt WebP file \(libwebp: bitstream error\)"),
    ("webp-huge-size", webp_huge, r"declares a size of 16384x16384"),
    ("tiff", lambda c: c.write("scan.tif", b"II*\0" + struct.pack("<I", 8) + b"\0" * 64), r"TIFF images are not supported"),
    ("png-bad-idat-crc", png_bad_idat_crc, r"corrupt PNG"),
    ("bmp-zero-bits", lambda c: c.write("zero-bits.bmp", bmp_header(0, 0)), r"corrupt BMP|bits"),
    ("bmp-rle", lambda c: c.write("rle.bmp", bmp_header(8, 1)), r"RLE-compressed BMP images are not supported"),
    ("jpeg-without-scan", jpeg_without_scan, r"truncated or corrupt JPEG"),
    ("gif-bad-code-size", gif_bad_code_size, r"corrupt GIF"),
    ("jpeg-too-many-scans", jpeg_many_scans, r"corrupt JPEG file \(progressive JPEG with more than 500 scans\)"),
    # Found by tools/fuzz.sh when stb decoded JPEGs: a Huffman table stb would overflow, behind
    # 0xFF fill bytes (stb took FF FF FF D8 for a JPEG). A JPEG starts with FF D8 FF, for
    # libjpeg and PIL too: this is not one.
    ("jpeg-fill-bytes-huffman-overflow", committed("jpeg-fill-bytes-huffman-overflow.jpg"), r"not an image"),
]


def st_case(name, data):
    return lambda c: c.write(name, data() if callable(data) else data)


def st_header(text, data=b""):
    """A safetensors file with this exact header text and data."""
    text = text.encode()
    return struct.pack("<Q", len(text)) + text + data


GOOD_ST = st_build(SMALL_TENSORS)

# Bad safetensors files: for every command that reads weights (model or conversion input).
WEIGHTS_FILE_CASES = [
    ("missing-file", lambda c: "no-such-weights.safetensors", r"No such file|no such file"),
    ("empty-file", st_case("empty.safetensors", b""), r"empty|too short|0 bytes"),
    ("random-bytes", st_case("random.safetensors", rng_bytes(4096, 2)), r"not a|header"),
    ("directory", lambda c: c.mkdir("weights.safetensors"), r"directory|not a regular file"),
    ("header-past-end", st_case("past-end.safetensors", lambda: struct.pack("<Q", 5000) + GOOD_ST[8:200]),
     r"runs past the end of the file"),
    ("header-length-huge", st_case("huge-header.safetensors", lambda: struct.pack("<Q", 1 << 62) + GOOD_ST[8:]),
     r"header length|past the end|over"),
    ("truncated-data", st_case("truncated.safetensors", lambda: GOOD_ST[:-10]), r"past the end of the data"),
    ("header-not-json", st_case("not-json.safetensors", st_header('{"fc.weight": {"dtype": "F32", oops')),
     r"not valid JSON"),
    ("offsets-outside-file", st_case("outside.safetensors", lambda: st_header(
        '{"fc.weight": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 4800000]}}', f32([0.5] * 12))),
     r"past the end of the data"),
    ("offsets-overlap", st_case("overlap.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},'
        ' "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}', f32([0.5] * 6))), r"overlap"),
    ("offsets-gap", st_case("gap.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
        ' "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}', f32([0.5] * 5))), r"gap"),
    ("offsets-reversed", st_case("reversed.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}', f32([0.5] * 2))), r"end before begin"),
    ("dtype-unknown", st_case("q4.safetensors", lambda: st_header(
        '{"a": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}}', f32([0.5] * 2))), r"unknown dtype 'Q4_K'"),
    ("dtype-size-mismatch", st_case("f64.safetensors", lambda: st_header(
        '{"a": {"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}}', f32([0.5] * 4))), r"needs 4 x 8 bytes"),
    ("shape-negative", st_case("negative.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}', f32([0.5] * 4))),
     r"not a non-negative integer"),
    ("shape-overflow", st_case("overflow.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 16]}}', f32([0.5] * 4))),
     r"overflows"),
    ("duplicate-name", st_case("duplicate.safetensors", lambda: st_header(
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        ' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', f32([0.5] * 2))), r"twice"),
    ("deep-json", st_case("deep.safetensors", lambda: st_header('{"a": ' + "[" * 100000 + "]" * 100000 + "}")),
     r"nests deeper"),
]


def pth_small(c, name="small.pth"):
    return c.fixture(name)


def pth_storage_short(c):
    src = c.fixture("small.pth")
    zip_rewrite(src, os.path.join(c.dir, "short-storage.pth"),
                lambda n, d: d[:len(d) // 2] if "/data/" in n else d)
    return "short-storage.pth"


def pth_storage_missing(c):
    src = c.fixture("small.pth")
    zip_rewrite(src, os.path.join(c.dir, "missing-storage.pth"), lambda n, d: None if n.endswith("/data/0") else d)
    return "missing-storage.pth"


def pth_with_pickle(name, pickle_bytes):
    """small.pth with its data.pkl replaced (pickle_bytes: bytes, or a function of the context)."""
    def make(c):
        src = c.fixture("small.pth")
        new = pickle_bytes(c) if callable(pickle_bytes) else pickle_bytes
        zip_rewrite(src, os.path.join(c.dir, name), lambda n, d: new if n.endswith("/data.pkl") else d)
        return name
    return make


# Hand-written pickles (protocol 2) that must be refused.
PICKLE_OS_SYSTEM = b"\x80\x02cposix\nsystem\nq\x00X\x0e\x00\x00\x00echo pwned > xq\x01\x85q\x02Rq\x03."
PICKLE_DEEP = b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b"."
PICKLE_UNSUPPORTED = b"\x80\x02}q\x00X\x02\x00\x00\x00lrq\x01G?\xb9\x99\x99\x99\x99\x99\x9as."  # {'lr': 0.1}
PICKLE_TRUNCATED = b"\x80\x02}q\x00(X\x09\x00\x00\x00fc.weight"

# Bad PyTorch files: for commands that convert ({weights_in}).
PTH_CASES = [
    ("pth-truncated-zip", lambda c: c.write("truncated.pth", open(c.fixture("small.pth"), "rb").read()[:700]),
     r"zip|truncated|end of central directory"),
    ("pth-truncated-legacy", lambda c: c.write("truncated-legacy.pth",
                                               open(c.fixture("small_legacy.pth"), "rb").read()[:-30]),
     r"truncated"),
    ("pth-zip-without-pickle", lambda c: c.write("notes.pth", zip_of({"notes/readme.txt": b"hello"})),
     r"no <folder>/data.pkl"),
    ("pth-storage-short", pth_storage_short, r"storage|short|needs"),
    ("pth-storage-missing", pth_storage_missing, r"storage .*data/0 is missing"),
    ("pth-global-os-system", pth_with_pickle("evil.pth", PICKLE_OS_SYSTEM), r"posix.system"),
    ("pth-deep-nesting", pth_with_pickle("deep.pth", PICKLE_DEEP), r"nest|deep"),
    ("pth-unsupported-opcode", pth_with_pickle("float.pth", PICKLE_UNSUPPORTED), r"BINFLOAT"),
    ("pth-truncated-pickle", pth_with_pickle("cut-pickle.pth", PICKLE_TRUNCATED), r"truncated|ends|end of"),
    ("pth-checkpoint-with-float", lambda c: c.fixture("checkpoint_lr.pth"), r"BINFLOAT"),
    ("pth-nested-checkpoint", lambda c: c.fixture("checkpoint_nested.pth"), r"expected a tensor"),
    ("pth-whole-model", lambda c: c.fixture("whole_model.pth"), r"torch\.nn\.modules"),
    ("pth-bare-tensor", lambda c: c.fixture("bare_tensor.pth"), r"expected a state dict"),
    ("pth-huge-view", pth_with_pickle("huge-view.pth", lambda c: huge_view_pickle(c)), r"past its storage"),
]


def zip_of(entries):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return out.getvalue()


def huge_view_pickle(c):
    """small.pth's pickle with fc.weight's size (4, 3) changed to (4, 300000000): a view far past
    its 12-element storage."""
    p = zipfile.ZipFile(c.fixture("small.pth")).read(pkl_name(c.fixture("small.pth")))
    # size tuple K\x04K\x03\x86 -> K\x04J<300000000>\x86 (BININT1 4, BININT 300000000, TUPLE2)
    i = p.index(b"K\x04K\x03\x86")
    return p[:i] + b"K\x04J" + struct.pack("<i", 300000000) + b"\x86" + p[i + 5:]


def inception_case(name, edit_tensors, edit_meta=None):
    return lambda c: c.edit_inception(name, edit_tensors, edit_meta)


# Weights that are a valid file but not a usable model: for commands that run a model ({weights}).
MODEL_CASES = [
    ("pth-not-a-model", lambda c: c.fixture("small.pth"), r"cannot tell which model .*\.pth state dict"),
    ("unknown-model", st_case("unknown.safetensors", lambda: st_build(SMALL_TENSORS)), r"cannot tell which model"),
    ("model-metadata-unknown", st_case("resnet.safetensors", lambda: st_build(SMALL_TENSORS, {"model": "resnet50"})),
     r"unknown model 'resnet50'"),
    ("tensor-reshaped", inception_case("reshaped.safetensors", lambda t: replace_tensor(
        t, "fc.weight", lambda x: (x[0], x[1], [2048, 1000], x[3]))), r"wrong shape: fc\.weight"),
    ("conv-reshaped", inception_case("conv-reshaped.safetensors", lambda t: replace_tensor(
        t, "Mixed_6b.branch7x7_2.conv.weight", lambda x: (x[0], x[1], [128, 128, 7, 1], x[3]))),
     r"wrong shape: Mixed_6b\.branch7x7_2\.conv\.weight"),
    ("layer-missing", inception_case("layer-missing.safetensors", lambda t: [
        x for x in t if not x[0].startswith("Mixed_6b.branch7x7_2.")]), r"missing: Mixed_6b\.branch7x7_2"),
    ("tensor-missing", inception_case("no-fc-bias.safetensors", lambda t: replace_tensor(t, "fc.bias", lambda x: None)),
     r"missing: fc\.bias"),
    ("tensor-extra", inception_case("extra.safetensors", lambda t: t + [("fc2.weight", "F32", [2], f32([1, 2]))]),
     r"unexpected: fc2\.weight"),
    ("tensor-5d", inception_case("five-dims.safetensors", lambda t: replace_tensor(
        t, "Conv2d_1a_3x3.conv.weight", lambda x: (x[0], x[1], [32, 3, 3, 3, 1], x[3]))), r"5 dims"),
    ("integer-dtype", inception_case("int-bias.safetensors", lambda t: replace_tensor(
        t, "fc.bias", lambda x: (x[0], "I32", x[2], x[3]))), r"fc\.bias.*I32"),
    ("nan-in-fc-bias", inception_case("nan.safetensors", lambda t: replace_tensor(
        t, "fc.bias", lambda x: (x[0], x[1], x[2], poke_f32(x[3], 17, float("nan"))))), r"fc\.bias.*NaN"),
    ("inf-in-conv-weight", inception_case("inf.safetensors", lambda t: replace_tensor(
        t, "Mixed_5b.branch1x1.conv.weight", lambda x: (x[0], x[1], x[2], poke_f32(x[3], 5, float("-inf"))))),
     r"Mixed_5b\.branch1x1\.conv\.weight.*(Inf|infinite)"),
    ("negative-running-var", inception_case("negative-var.safetensors", lambda t: replace_tensor(
        t, "Conv2d_2a_3x3.bn.running_var", lambda x: (x[0], x[1], x[2], poke_f32(x[3], 3, -1.0)))),
     r"negative running variance"),
]

TARGET_CASES = [
    ("target-ambiguous", lambda c: "panda", r"ambiguous"),
    ("target-unknown", lambda c: "xyzzy", r"unknown class"),
    ("target-typo", lambda c: "hgo", r"unknown class 'hgo': did you mean 341 \(hog\)"),
    ("target-index-1000", lambda c: "1000", r"out of range"),
    ("target-negative", lambda c: "-1", r"out of range|unknown class"),
    ("target-empty", lambda c: "", r"empty"),
]


def unwritable_dir(c, ext):
    c.mkdir("readonly", 0o555)
    c.run_as_nobody = os.geteuid() == 0  # root writes anywhere: run the command as nobody
    return "readonly/out." + ext


def existing_output(c, ext):
    c.write("existing." + ext, b"the previous result, which a failed run must leave alone\n")
    return "existing." + ext


OUT_CASES = [
    ("out-missing-directory", lambda c, ext: "no-such-dir/out." + ext, r"No such file or directory"),
    ("out-is-directory", lambda c, ext: c.mkdir("outdir." + ext), r"directory"),
    ("out-parent-is-file", lambda c, ext: c.write("file.txt", b"x") + "/out." + ext, r"Not a directory"),
    ("out-unwritable-directory", unwritable_dir, r"Permission denied|not writable|Read-only"),
]

def unwritable_outdir(c):
    c.mkdir("readonly", 0o555)
    c.run_as_nobody = os.geteuid() == 0
    return "readonly/result"


# Output folders (created with their parents when missing, so a missing parent is no error).
OUTDIR_CASES = [
    ("outdir-is-file", lambda c: c.write("result", b"a file where the output folder should go\n"),
     r"not a directory|exists|Not a directory|File exists"),
    # These name the folder that is in the way, which is the right one to name.
    ("outdir-parent-is-file", lambda c: c.write("file.txt", b"x") + "/result", r"Not a directory|not a directory",
     "file.txt"),
    ("outdir-unwritable", unwritable_outdir, r"Permission denied|not writable", "readonly"),
]


# ---- IDX datasets (train, eval): a folder with Fashion-MNIST's four file names -------------------

IDX_FILES = {"train": (48, 28, 28), "t10k": (32, 28, 28)}


def idx_images(count, rows, cols, seed, magic=0x803):
    return struct.pack(">IIII", magic, count, rows, cols) + rng_bytes(count * rows * cols, seed)


def idx_labels(count, seed):
    r = random.Random(seed)
    return struct.pack(">II", 0x801, count) + bytes(r.randrange(10) for _ in range(count))


def idx_dir(c, damage=None, name="data"):
    """A small Fashion-MNIST-shaped dataset, gzip'd under Debian's file names. damage(file name,
    IDX bytes) -> (bytes, gzip them?) changes one file (None: leave it out); the others stay good."""
    c.mkdir(name)
    for split, (n, rows, cols) in IDX_FILES.items():
        for kind, data in (("images-idx3-ubyte", idx_images(n, rows, cols, len(split) + 100)),
                           ("labels-idx1-ubyte", idx_labels(n, len(split)))):
            fname = f"{split}-{kind}"
            compress = True
            if damage:
                data, compress = damage(fname, data)
            if data is None:
                continue
            c.write(f"{name}/{fname}.gz", gzip.compress(data, mtime=0) if compress else data)
    return name


def damage_one(target, fn):
    """A damage function changing only `target` (e.g. "t10k-images-idx3-ubyte"): fn(IDX bytes)
    -> bytes (then gzip'd), or (bytes, False) to store them as they are, or None to leave it out."""
    def damage(fname, data):
        if fname != target:
            return data, True
        out = fn(data)
        return out if isinstance(out, tuple) else (out, True)
    return damage


def gzip_cut(data):
    return gzip.compress(data, mtime=0)[:-40], False


def gzip_corrupt(data):
    z = bytearray(gzip.compress(data, mtime=0))
    z[len(z) // 2:len(z) // 2 + 16] = rng_bytes(16, 5)
    return bytes(z), False


T10K_IMAGES = "data/t10k-images-idx3-ubyte.gz"
T10K_LABELS = "data/t10k-labels-idx1-ubyte.gz"
IDX_CASES = [
    ("idx-missing-folder", lambda c: "no-such-data", r"cannot open|No such file|no such"),
    ("idx-missing-file", lambda c: idx_dir(c, damage_one("t10k-labels-idx1-ubyte", lambda d: None)),
     r"cannot open|No such file|no such", T10K_LABELS),
    ("idx-bad-magic", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", lambda d: b"\0\0\x08\x04" + d[4:])),
     r"magic", T10K_IMAGES),
    ("idx-short-data", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", lambda d: d[:-100])),
     r"short|truncated|ends|expected", T10K_IMAGES),
    ("idx-trailing-data", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", lambda d: d + b"extra")),
     r"trailing|after|more|extra", T10K_IMAGES),
    ("idx-label-out-of-range", lambda c: idx_dir(c, damage_one("t10k-labels-idx1-ubyte", lambda d: d[:-1] + b"\x0c")),
     r"label", T10K_LABELS),
    ("idx-count-mismatch", lambda c: idx_dir(c, damage_one("t10k-labels-idx1-ubyte", lambda d: idx_labels(31, 1))),
     r"31|count|labels"),
    ("idx-not-28x28", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", lambda d: idx_images(32, 32, 32, 3))),
     r"28x28", T10K_IMAGES),
    ("idx-huge-count", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte",
                                                     lambda d: struct.pack(">IIII", 0x803, 2500000, 28, 28) + d[16:])),
     r"short|truncated|ends|expected|large", T10K_IMAGES),
    # Found by fuzz_idx: no images, but each "28x28" is 2^32-1 x 2^32-1 (their product overflowed).
    ("idx-empty-huge-dims", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte",
                                                          lambda d: struct.pack(">IIII", 0x803, 0, 0xFFFFFFFF,
                                                                                0xFFFFFFFF))),
     r"implausibly large|too many elements", T10K_IMAGES),
    ("idx-truncated-gzip", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", gzip_cut)),
     r"truncated gzip", T10K_IMAGES),
    ("idx-corrupt-gzip", lambda c: idx_dir(c, damage_one("t10k-images-idx3-ubyte", gzip_corrupt)),
     r"corrupt gzip|truncated gzip", T10K_IMAGES),
    ("idx-random-bytes", lambda c: idx_dir(c, damage_one("t10k-labels-idx1-ubyte", lambda d: (rng_bytes(500, 9), False))),
     r"magic|not an IDX|IDX", T10K_LABELS),
]

def manifest(c, text, name="jobs.csv"):
    """A manifest (CSV) beside a good image."""
    c.write("good.png", png_bytes(64, 48))
    return c.write(name, text)


# Bad manifests (attack --manifest): the file itself; a bad image in a row is that row's
# error.json, not the command's failure (tests/test_manifest.cpp).
MANIFEST_CASES = [
    ("manifest-missing", lambda c: "no-such-jobs.csv", r"cannot read the manifest: No such file"),
    ("manifest-empty", lambda c: manifest(c, b""), r"the manifest is empty"),
    ("manifest-directory", lambda c: c.mkdir("jobs.csv"), r"is a directory"),
    ("manifest-binary", lambda c: manifest(c, png_bytes(16, 16)), r"not a CSV text file"),
    ("manifest-no-image-column", lambda c: manifest(c, b"target\n341\n"), r"no 'image' column"),
    ("manifest-unknown-column", lambda c: manifest(c, b"image,colour\ngood.png,red\n"), r"unknown column 'colour'"),
    ("manifest-field-count", lambda c: manifest(c, b"image,target\ngood.png\n"), r":2: 1 fields, the header has 2"),
    ("manifest-unclosed-quote", lambda c: manifest(c, b'image,target\n"good.png,bag\n'), r"never closed"),
    ("manifest-duplicate-id", lambda c: manifest(c, b"image,target,id\ngood.png,bag,x\ngood.png,coat,x\n"),
     r"id 'x' is used by an earlier row"),
    ("manifest-empty-image", lambda c: manifest(c, b"image,target\n,bag\n"), r"the image field is empty"),
]

FASHION_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "data", "models", "fashion_inception.safetensors")


def fashion_case(name, edit_tensors):
    """A copy of the embedded model's weight file with its tensor list edited."""
    def make(c):
        meta, tensors = st_read(FASHION_WEIGHTS)
        return c.write(name, st_build(edit_tensors(list(tensors)), meta))
    return make


# Weights for the Fashion-MNIST model (eval --weights): the file cases, and valid files that
# are not a usable Fashion-MNIST model.
FASHION_MODEL_CASES = [
    ("inception-for-fashion", lambda c: c.fixture("inception.safetensors"), r"does not take Fashion-MNIST"),
    ("inception-pth-for-fashion", lambda c: c.fixture("inception.pth"), r"does not take Fashion-MNIST"),
    ("fashion-tensor-missing", fashion_case("no-fc.safetensors", lambda t: replace_tensor(t, "fc.bias", lambda x: None)),
     r"missing: fc\.bias"),
    ("fashion-conv-reshaped", fashion_case("reshaped.safetensors", lambda t: replace_tensor(
        t, "stem.conv.weight", lambda x: (x[0], x[1], list(reversed(x[2])), x[3]))), r"wrong shape: stem\.conv\.weight"),
    ("fashion-nan", fashion_case("nan.safetensors", lambda t: replace_tensor(
        t, "block1.branch1x1.bn.bias", lambda x: (x[0], x[1], x[2], poke_f32(x[3], 3, float("nan"))))),
     r"block1\.branch1x1\.bn\.bias.*NaN"),
]

# Inception files that read but do not load: convert refuses them too (before writing).
CONVERT_MODEL_CASES = [case for case in MODEL_CASES if case[0] in (
    "tensor-reshaped", "conv-reshaped", "layer-missing", "tensor-missing", "tensor-extra", "nan-in-fc-bias",
    "inf-in-conv-weight", "negative-running-var")]

# Families keyed by the placeholder that selects them.
FAMILIES = {
    "image": IMAGE_CASES,
    "weights": WEIGHTS_FILE_CASES + MODEL_CASES,
    "weights_in": WEIGHTS_FILE_CASES + PTH_CASES + CONVERT_MODEL_CASES,
    "weights_pth": PTH_CASES,
    "target": TARGET_CASES,
    "out": OUT_CASES,
    "outdir": OUTDIR_CASES,
    "idx_dir": IDX_CASES,
    "manifest": MANIFEST_CASES,
    "weights_fashion": WEIGHTS_FILE_CASES + FASHION_MODEL_CASES,
}

PLACEHOLDER = re.compile(r"\{(\w+)(?:\.(\w+))?\}")


def placeholders(template):
    return [m.group(1) for m in PLACEHOLDER.finditer(template)]


# ---- the case list ---------------------------------------------------------------------------------


def all_cases():
    """{(command, case): spec}; spec: dict(bad=(placeholder, generator) or None, extra=[...],
    names=str or None, what=regex or None, expect_ok=bool)."""
    cases = {}
    for cmd, template in COMMANDS.items():
        cases[(cmd, "control")] = dict(bad=None, extra=[], names=None, what=None, expect_ok=True)
        for ph in placeholders(template):
            for entry in FAMILIES.get(ph, []):
                name, gen, what = entry[:3]
                cases[(cmd, name)] = dict(bad=(ph, gen), extra=[], names=entry[3] if len(entry) > 3 else None,
                                          what=what, expect_ok=False)
        cases[(cmd, "unknown-option")] = dict(bad=None, extra=["--no-such-option"], names="--no-such-option",
                                              what=r"not expected|unknown|extra", expect_ok=False)
        if placeholders(template) and cmd not in RUNS_WITHOUT_ARGUMENTS:
            cases[(cmd, "no-arguments")] = dict(bad=None, extra=None, names=None, what=r"required",
                                                expect_ok=False)
    for cmd, name, extra, names, what in OPTION_CASES:
        if cmd in COMMANDS:
            cases[(cmd, name)] = dict(bad=None, extra=extra, names=names, what=what, expect_ok=False)
    return cases


def with_options(argv, extra):
    """argv with the options of `extra` set: an option the command line already has gets the
    new value in place (CLI11 refuses an option given twice), others are appended."""
    argv, extra = list(argv), list(extra)
    i = 0
    while i < len(extra):
        opt = extra[i]
        has_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if opt.startswith("--") and has_value and opt in argv and argv.index(opt) + 1 < len(argv):
            argv[argv.index(opt) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2] if has_value else [opt]
        i += 2 if has_value else 1
    return argv


def build_argv(template, ctx, bad, expect_ok=True):
    """The command line; in a case that must fail, a good {out.EXT} already exists (a previous
    result), so the unchanged-directory check also proves a failed run leaves it alone."""
    argv = []
    for word in template.split():
        m = PLACEHOLDER.fullmatch(word)
        if not m:
            argv.append(word)
            continue
        ph, ext = m.group(1), m.group(2)
        if bad and bad[0] == ph:
            value = bad[1](ctx, ext) if ph == "out" else bad[1](ctx)
        elif ph == "out" and not expect_ok:
            value = existing_output(ctx, ext)
        else:
            value = GOOD[ph](ctx, ext) if ph == "out" else GOOD[ph](ctx)
        argv.append(value)
    return argv


# ---- running and checking one case ------------------------------------------------------------------

CRASH_SIGNS = ["AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
               "terminate called", "Segmentation fault", "core dumped", "Assertion", "Aborted", "stack smashing"]


def snapshot(root):
    """{relative path: (kind, mode, sha256)} of everything under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            h = None
            if stat.S_ISREG(st.st_mode):
                h = SHARED.known_hash(st)
                if h is None:
                    with open(p, "rb") as f:
                        h = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), h)
    return out


def temporaries(root):
    found = []
    for d, dirs, files in os.walk(root):
        found += [os.path.join(d, n) for n in dirs + files if ".tmp-" in n or n.endswith(".tmp")]
    return found


_subcommands = {}


# Subcommands listed in COMMANDS before they land in the tree: their cases skip (exit 77).
# Every other command missing from `trick --help` is a failure, so a broken --help cannot
# turn the whole corpus into skips.
PENDING = set()


def subcommands(trick):
    """The subcommands `trick --help` lists."""
    if trick not in _subcommands:
        text = subprocess.run([trick, "--help"], capture_output=True, text=True).stdout
        section = text.split("Subcommands:", 1)[-1]
        _subcommands[trick] = {line.split()[0] for line in section.splitlines() if line.startswith("  ")}
    return _subcommands[trick]


def run_case(trick, fixture_dir, cmd, case, spec, quiet=False):
    """Returns (status, message): status 'pass', 'fail' or 'skip'."""
    trick, fixture_dir = os.path.abspath(trick), os.path.abspath(fixture_dir)
    sub = COMMANDS[cmd].split()[0]  # the subcommand ("bench" for bench_layers)
    if sub not in subcommands(trick):
        if sub in PENDING:  # listed here before its command landed in this tree
            return "skip", f"this trick has no '{sub}' command yet"
        return "fail", f"`trick --help` does not list the '{sub}' command (listed: {sorted(subcommands(trick))})"
    case_dir = os.path.join(fixture_dir, "cases", f"{cmd}-{case}")
    if os.path.exists(case_dir):
        make_writable(case_dir)
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    os.chmod(case_dir, 0o755)
    ctx = Ctx(case_dir, fixture_dir)
    template = COMMANDS[cmd]
    if spec["extra"] is None:  # the command with none of its arguments
        argv = [sub]
    elif spec["extra"] and spec["extra"][0] == sub:  # a whole command line
        argv = list(spec["extra"])
    else:
        prefill = not spec["expect_ok"] and cmd not in OUT_IS_A_CHECKPOINT
        argv = with_options(build_argv(template, ctx, spec["bad"], not prefill), spec["extra"])
    names = spec["names"]
    if names is None and spec["bad"]:
        ph = spec["bad"][0]
        names = argv[[i for i, w in enumerate(template.split()) if PLACEHOLDER.fullmatch(w) and
                      PLACEHOLDER.fullmatch(w).group(1) == ph][0]]
        if ph == "target":
            names = "--target"
    prefix = []
    if ctx.run_as_nobody:
        if not shutil.which("setpriv"):
            return "skip", "running as root and setpriv is missing: cannot make a directory unwritable"
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        if subprocess.run(prefix + [trick, "--version"], capture_output=True).returncode != 0:
            return "skip", f"user nobody cannot run {trick} (a parent directory is private?)"
        # The fixture's files by a path relative to the case's folder, which nobody reaches
        # through folders this script made, even where a parent of the fixture is closed to it
        # (a clone in /root, mode 700, on a fresh machine). setpriv itself can start trick
        # there, but trick, once started, cannot open /root/... .
        argv = [os.path.relpath(a, case_dir) if os.path.isabs(a) and os.path.exists(a) else a for a in argv]
        for a in argv:
            if os.path.isfile(os.path.join(case_dir, a)) and subprocess.run(
                    prefix + ["test", "-r", a], cwd=case_dir, capture_output=True).returncode != 0:
                return "skip", f"user nobody cannot read {a} from {case_dir}"
    before = snapshot(case_dir)
    fixtures_before = set(os.listdir(fixture_dir))
    shown = " ".join(["trick"] + [repr(a) if (not a or " " in a) else a for a in argv])
    try:
        p = subprocess.run(prefix + [trick] + argv, cwd=case_dir, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "fail", f"{shown}: did not finish in 600 s"
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    problems = []
    if spec["expect_ok"]:
        if p.returncode not in CONTROL_STATUS.get(cmd, (0,)):
            problems.append(f"the control run (all inputs good) failed with status {p.returncode}")
    else:
        if p.returncode < 0:
            problems.append(f"killed by signal {-p.returncode}")
        elif p.returncode not in (1, 2):
            problems.append(f"exit status {p.returncode}, expected 1 (error) or 2 (command-line mistake)")
        errors = [l for l in err.splitlines() if l.startswith("error:")]
        if len(errors) != 1:
            problems.append(f"{len(errors)} lines on stderr start with 'error:', expected exactly one")
        if [l for l in out.splitlines() if l.startswith("error:")]:
            problems.append("an 'error:' line went to stdout")
        if errors:
            line = errors[0]
            if names and names not in line:
                problems.append(f"the error does not name {names!r}")
            if spec["what"] and not re.search(spec["what"], line):
                problems.append(f"the error does not say what is wrong (no match for /{spec['what']}/)")
    for sign in CRASH_SIGNS:
        if sign in err or sign in out:
            problems.append(f"crash sign in the output: {sign!r}")
    after = snapshot(case_dir)
    if not spec["expect_ok"] and after != before:
        changed = sorted(set(after) ^ set(before)) + sorted(k for k in set(after) & set(before)
                                                             if after[k] != before[k])
        problems.append(f"the case directory changed: {changed}")
    stray = temporaries(case_dir) + [os.path.join(fixture_dir, n) for n in set(os.listdir(fixture_dir)) -
                                     fixtures_before]
    if stray:
        problems.append(f"files left behind: {stray}")
    report = f"$ (cd {case_dir} && {shown})\nstatus {p.returncode}\n--- stdout\n{out[-3000:]}--- stderr\n{err[-6000:]}"
    if problems:
        return "fail", report + "\n" + "\n".join("FAIL: " + x for x in problems)
    make_writable(case_dir)
    shutil.rmtree(case_dir, ignore_errors=True)  # derived weight files are large
    return "pass", report


def make_writable(d):
    for root, dirs, files in os.walk(d):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o755)


# ---- the fixture (needs torch) ----------------------------------------------------------------------


def setup(trick, fixture_dir):
    """Weights made once per test run: torchvision's Inception v3 state dict (random, seeded)
    saved by torch and converted by `trick convert`, and small .pth files of every kind."""
    os.makedirs(fixture_dir, exist_ok=True)
    stamp = os.path.join(fixture_dir, "stamp")
    import torch
    import torchvision
    key = f"{FIXTURE_VERSION} torch {torch.__version__} torchvision {torchvision.__version__}"
    if os.path.exists(stamp) and open(stamp).read() == key:
        print("fixture up to date:", fixture_dir)
        return
    for n in os.listdir(fixture_dir):
        p = os.path.join(fixture_dir, n)
        if os.path.isdir(p):
            make_writable(p)
            shutil.rmtree(p)
        else:
            os.remove(p)
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.eval()
    sd = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():  # batch-norm statistics that are not the identity
        if k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    pth = os.path.join(fixture_dir, "inception.pth")
    torch.save(sd, pth)
    st = os.path.join(fixture_dir, "inception.safetensors")
    subprocess.run([trick, "convert", pth, "-o", st], check=True)  # the .pth stays: --weights reads it too

    small = {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g),
             "bn.num_batches_tracked": torch.tensor(7)}
    torch.save(small, os.path.join(fixture_dir, "small.pth"))
    torch.save(small, os.path.join(fixture_dir, "small_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save({"fc.weight": small["fc.weight"], "lr": 0.1}, os.path.join(fixture_dir, "checkpoint_lr.pth"))
    torch.save({"model": small, "epoch": 3}, os.path.join(fixture_dir, "checkpoint_nested.pth"))
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)), os.path.join(fixture_dir, "whole_model.pth"))
    torch.save(torch.zeros(3), os.path.join(fixture_dir, "bare_tensor.pth"))
    with open(stamp, "w") as f:
        f.write(key)
    print("fixture written:", fixture_dir)


# ---- main -------------------------------------------------------------------------------------------


def main(argv):
    if len(argv) >= 1 and argv[0] == "list":
        for cmd, case in all_cases():
            print(cmd, case)
        return 0
    if len(argv) == 3 and argv[0] == "setup":
        setup(argv[1], argv[2])
        return 0
    if len(argv) == 5 and argv[0] == "run":
        trick, fixture_dir, cmd, case = argv[1:]
        cases = all_cases()
        if (cmd, case) not in cases:
            die(f"no case '{cmd} {case}' (see bad_inputs.py list)")
        if not os.path.exists(os.path.join(fixture_dir, "stamp")):
            die(f"no fixture in {fixture_dir}: run bad_inputs.py setup first")
        status, report = run_case(trick, fixture_dir, cmd, case, cases[(cmd, case)])
        print(report)
        if status == "skip":
            print("SKIPPED:", report)
            return SKIP
        return 0 if status == "pass" else 1
    if len(argv) >= 3 and argv[0] == "all":
        return run_all(argv[1], argv[2], argv[3:])
    print(__doc__)
    return 2


def run_all(trick, fixture_dir, rest):
    import concurrent.futures
    import time
    jobs = int(rest[rest.index("-j") + 1]) if "-j" in rest else 1
    setup(trick, fixture_dir)
    cases = all_cases()
    if "--only" in rest:  # a regular expression over "command case"
        pattern = re.compile(rest[rest.index("--only") + 1])
        cases = {k: v for k, v in cases.items() if pattern.search(" ".join(k))}
    if "--distinct" in rest:
        # Each bad input (a placeholder's family case) through the first command in COMMANDS
        # that gets it, preprocess first (images without a model load; then classify for
        # weights, grad for targets); every control, option and command-line case as before.
        # Under the sanitizers a bad file's reader and its error path are the same code whichever
        # command reads it, and most of these cases cost a load of Inception v3 (1.2 s under ASan
        # against 0.5 s): all 525 took 90 s of CI's 20 minutes. The plain run checks every case.
        rank = {cmd: i for i, cmd in enumerate(["preprocess"] + [c for c in COMMANDS if c != "preprocess"])}
        kept, seen = {}, set()
        for key in sorted(cases, key=lambda k: (rank[k[0]], k[1])):
            bad = cases[key]["bad"]
            family = (bad[0], key[1]) if bad else None
            if family is None or family not in seen:
                kept[key] = cases[key]
                seen.add(family)
        print(f"--distinct: {len(kept)} of {len(cases)} cases (each bad input file through one command)")
        cases = kept
    failed, skipped = [], []
    t0 = time.time()

    seconds = {}

    def one(key):
        start = time.monotonic()
        result = run_case(trick, fixture_dir, key[0], key[1], cases[key])
        seconds[key] = time.monotonic() - start
        return key, result

    # Grouped by case name: the commands that get the same bad file run one after another, so
    # Shared keeps it only while they need it.
    order = sorted(cases, key=lambda k: (k[1], k[0]))
    SHARED.start(fixture_dir)
    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for (cmd, case), (status, report) in pool.map(one, order):
                if status == "fail":
                    failed.append((cmd, case))
                    print(f"--- FAIL: bad input: {cmd} {case}\n{report}\n")
                elif "-v" in rest:
                    lines = [l for l in report.splitlines() if l.startswith("error:")] or ["(succeeded)"]
                    print(f"ok: {cmd} {case}: {lines[0]}")
                if status == "skip":
                    skipped.append((cmd, case))
                    print(f"--- skipped: bad input: {cmd} {case}: {report}")
    finally:
        SHARED.stop()
    print(f"bad inputs: {len(cases) - len(failed) - len(skipped)} passed, {len(failed)} failed, {len(skipped)} "
          f"skipped of {len(cases)} in {time.time() - t0:.0f} s")
    for cmd, case in failed:
        print(f"  failed: {cmd} {case}")
    if "--slowest" in rest:
        n = int(rest[rest.index("--slowest") + 1])
        for (cmd, case), t in sorted(seconds.items(), key=lambda kv: -kv[1])[:n]:
            print(f"  {t:6.2f} s  {cmd} {case}")
        totals = {}
        for (cmd, _), t in seconds.items():
            totals[cmd] = totals.get(cmd, 0.0) + t
        for cmd, t in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"  {t:7.1f} s in {sum(1 for k in seconds if k[0] == cmd):3d} cases: {cmd}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
