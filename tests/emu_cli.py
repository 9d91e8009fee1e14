#!/usr/bin/python3
"""The command's GPU paths on the CUDA emulator (`trick_emu`: trick with our kernels compiled
for the CPU, kernels/cuda/emu/README.md), against the CPU backend of the same binary.

Usage: emu_cli.py TRICK_EMU_BINARY
       emu_cli.py TRICK_BINARY --gpu   (on a GPU: tools/gpu_check.sh; 1-4, 6 and 7 only)

On the embedded Fashion-MNIST model and its samples (the README's demo attack: sneaker ->
ankle boot, PGD from the photo, eps 12):
  1. `attack --device cuda` (graphs, the default) reaches the target as `--device cpu` does
     (29 steps each here; within 2 is allowed), their first forward agrees to fp32 rounding,
     and summary.json names the GPU backend and counts every step after the first as replayed;
  2. a batch of three (two reach the target at steps 19 and 29, one runs out of steps, so the
     graph is captured again twice) from CUDA graphs equals `--no-graph` bit for bit: every
     trace row but its time and L2 norm (fp32 sums there, double here: 1e-6), every
     adversarial pixel, the exit status;
  3. `--tf32` and `--bf16` run our tensor-core kernels (the first loss moves by their
     rounding, not by fp32's) and still reach the target;
  4. `classify` and `grad` on the GPU agree with the CPU;
  5. out of GPU memory anywhere from loading the model to the attack's last allocation (the
     emulator's memory capped by TRICK_EMU_MEMORY): one error line naming the size and what
     was being done, exit status 1 and no output, or a finished attack;
  6. a device index past the last is one error line naming it; on the emulator, `--conv cublas`
     one line saying it needs a real GPU;
  7. `bench --both` (eager and graph: equal gradients, no cudaMalloc in the timed loop) and
     `bench --layers` on the GPU;
  8. CUDA calls failing as a GPU's do (the emulator's TRICK_EMU_FAULT), in a 2-image attack:
     the memory full from each cudaMalloc on, and each cudaMalloc failing once; a kernel
     faulting (the context lost) at 24 points from the first kernel to the last; a capture
     and an instantiation failing once and always. A failure the command can survive (a
     passing shortage, a failed capture: those steps run eagerly, with a note) leaves the
     outputs of the run without faults; one it cannot is one error line, exit status 1 and
     no output. And `grad` with each cudaMalloc failing once and from it on, and each of its
     kernels faulting; `bench` with a capture failing (one error line naming the row).
On a GPU, tools/gpu_check.sh runs 1-4, 6 and 7 against the real binary (--gpu; 5 and 8 need
the emulator's TRICK_EMU_MEMORY and TRICK_EMU_FAULT), besides the kernels' own tests. Prints
what it compared; exits non-zero on any failure.
"""
import csv
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples", "fashion")
DEMO = ["--target", "ankle boot", "--eps", "12", "--no-random-start"]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(args, want_rc=0, env=None):  # want_rc None: any exit status
    p = subprocess.run([EMU] + args, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **(env or {})))
    if want_rc is not None and p.returncode != want_rc:
        print(p.stdout + p.stderr)
        check(False, f"`trick_emu {' '.join(args)}` exit status {p.returncode}, expected {want_rc}")
    return p


def attack(images, extra, out, want_rc=0, env=None):
    return run(["attack"] + [os.path.join(SAMPLES, i) for i in images] + DEMO + extra + ["--out", out], want_rc, env)


def folders(out):  # a batch's outputs: out/NN-name-class/
    return sorted(os.path.join(out, d) for d in os.listdir(out) if os.path.isdir(os.path.join(out, d)))


def trace(folder):
    with open(os.path.join(folder, "trace.csv")) as f:
        return list(csv.DictReader(f))


def summary(folder):
    with open(os.path.join(folder, "summary.json")) as f:
        return json.load(f)


def pixels(folder):
    return np.asarray(Image.open(os.path.join(folder, "adversarial.png")))


def errors(p):  # stderr but the attack's "target" lines and ASan's warning about the emulator's
    # swapcontext when trick_emu is built with it (kernels/cuda/emu/README.md)
    return [line for line in p.stderr.splitlines()
            if ": target 9 (" not in line and "ASan doesn't fully support makecontext/swapcontext" not in line]


def calls_made(p):  # TRICK_EMU_FAULT=count's "calls made: malloc 194 launch 544 ...; at most N bytes allocated"
    words = p.stderr.split("calls made:")[-1].split(";")[0].split()
    return {k: int(v) for k, v in zip(words[::2], words[1::2])}


def rel(a, b):
    return abs(a - b) / abs(b)


def main(tmp):
    # 1. the demo attack, GPU (graphs) against CPU
    attack(["7_sneaker.png"], ["--device", "cuda"], f"{tmp}/gpu")
    attack(["7_sneaker.png"], ["--device", "cpu"], f"{tmp}/cpu")
    g, c = summary(f"{tmp}/gpu"), summary(f"{tmp}/cpu")
    tg, tc = trace(f"{tmp}/gpu"), trace(f"{tmp}/cpu")
    want = {"conv": "own", "cuda_graph": True, "cuda_graph_failure": None, "cuda_graph_steps": len(tg) - 1,
            "math": "fp32"}
    check(g["device"] == "cuda:0" and g["backend"] == want,
          f"summary.json names the emulated GPU's backend, every step after the first from a graph: "
          f"{g['device']} {g['backend']}, {len(tg)} trace rows")
    # (Equal here; fp32 differences could move the stop by a step where the CPU's sums differ.)
    check(g["success"]["8bit"] and c["success"]["8bit"] and abs(g["steps"] - c["steps"]) <= 2,
          f"GPU and CPU reach the target within 2 steps of each other: {g['steps']} and {c['steps']}")
    l0g, l0c = float(tg[0]["loss"]), float(tc[0]["loss"])
    check(rel(l0g, l0c) < 1e-5, f"first loss, GPU {l0g} against CPU {l0c}: relative {rel(l0g, l0c):.1e} < 1e-5")

    # 2. a batch, graphs against eager
    batch = ["7_sneaker.png", "5_sandal.png", "0_t-shirt_top.png"]
    attack(batch, ["--device", "cuda", "--steps", "60"], f"{tmp}/graph", want_rc=3)
    attack(batch, ["--device", "cuda", "--steps", "60", "--no-graph"], f"{tmp}/eager", want_rc=3)
    fg, fe = folders(f"{tmp}/graph"), folders(f"{tmp}/eager")
    check(len(fg) == 3 and len(fe) == 3, f"three outputs each: {len(fg)} and {len(fe)}")
    for a, b in zip(fg, fe):
        # l2_255 apart: a replayed step sums its squares in fp32 on the device, an eager one in
        # double on the host (attack/README.md); the rest to the last digit.
        ra = [{k: v for k, v in r.items() if k not in ("seconds", "l2_255")} for r in trace(a)]
        rb = [{k: v for k, v in r.items() if k not in ("seconds", "l2_255")} for r in trace(b)]
        l2 = max((rel(float(x["l2_255"]), float(y["l2_255"])) for x, y in zip(trace(a)[1:], trace(b)[1:])), default=1)
        name = os.path.basename(a)
        check(ra == rb and len(ra) > 1, f"{name}: {len(ra)} trace rows from graphs equal eager's")
        check(l2 < 1e-6, f"{name}: the L2 norms in them at most {l2:.1e} apart (< 1e-6)")
        check(np.array_equal(pixels(a), pixels(b)), f"{name}: adversarial.png from graphs equals eager's")
        ba, bb = summary(a)["backend"], summary(b)["backend"]
        check(ba["cuda_graph"] and 0 < ba["cuda_graph_steps"] < len(ra) and not bb["cuda_graph"] and
              bb["cuda_graph_steps"] == 0, f"{name}: {ba['cuda_graph_steps']} steps replayed from graphs, "
              f"{bb['cuda_graph_steps']} with --no-graph")
    steps = [summary(a)["steps"] for a in fg]
    # On the emulator exactly these; a GPU's sums in another order may move a stop by a step.
    check(steps == [29, 19, 60] or GPU and all(abs(a - b) <= 2 for a, b in zip(steps, [29, 19, 60])),
          f"the batch's steps (each image's own stop): {steps}")

    # 3. tensor-core modes
    for mode, lo, hi in (("tf32", 1e-6, 1e-2), ("bf16", 1e-5, 5e-2)):
        attack(["7_sneaker.png"], ["--device", "cuda", f"--{mode}"], f"{tmp}/{mode}")
        s, t = summary(f"{tmp}/{mode}"), trace(f"{tmp}/{mode}")
        l0 = float(t[0]["loss"])
        check(s["backend"]["math"] == mode and s["success"]["8bit"],
              f"--{mode}: math {s['backend']['math']}, the target reached in {s['steps']} steps")
        check(lo < rel(l0, l0g) < hi, f"--{mode}: first loss {l0} against fp32's {l0g}: relative "
              f"{rel(l0, l0g):.1e} in ({lo:g}, {hi:g})")

    # 4. classify and grad
    images = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES))
    out = {}
    for dev in ("cuda", "cpu"):
        p = run(["classify"] + images + ["--device", dev, "--json", "--logits"])
        out[dev] = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    worst = max(np.abs(np.array(a["logits"]) - np.array(b["logits"])).max() for a, b in zip(out["cuda"], out["cpu"]))
    same = all(a["top"][0]["index"] == b["top"][0]["index"] for a, b in zip(out["cuda"], out["cpu"]))
    check(len(out["cuda"]) == len(images) == len(out["cpu"]) and worst < 1e-4 and same,
          f"classify, {len(images)} images: logits at most {worst:.1e} apart (< 1e-4), the same top-1")
    for dev in ("cuda", "cpu"):
        run(["grad", os.path.join(SAMPLES, "7_sneaker.png"), "--target", "ankle boot", "--device", dev,
             "-o", f"{tmp}/grad_{dev}.npy"])
    a, b = np.load(f"{tmp}/grad_cuda.npy"), np.load(f"{tmp}/grad_cpu.npy")
    e = np.linalg.norm(a - b) / np.linalg.norm(b)
    check(a.shape == b.shape and e < 1e-5, f"grad: GPU against CPU, relative L2 {e:.1e} < 1e-5")

    # 6. a device that is not there
    past = "cuda:64" if GPU else "cuda:1"  # the emulator has one device; a GPU machine may have several
    p = run(["classify", images[0], "--device", past], want_rc=1)
    lines = p.stderr.strip().splitlines()
    check(len(lines) == 1 and lines[0].startswith("error:") and past in lines[0], f"--device {past}: {lines}")
    if not GPU:  # the emulator runs our kernels only; cuBLAS would load and find no GPU
        p = run(["classify", images[0], "--device", "cuda", "--conv", "cublas"], want_rc=1)
        lines = p.stderr.strip().splitlines()
        info = [l for l in run(["info"]).stdout.splitlines() if l.startswith("cuBLAS")]
        check(len(lines) == 1 and lines[0].startswith("error: cuBLAS (--conv cublas) cannot be loaded: the CUDA "
                                                      "emulator") and "--conv own" in lines[0] and
              info and "cannot be loaded: the CUDA emulator" in info[0], f"--conv cublas on the emulator: {lines}, {info}")

    # 7. the benchmark's GPU paths: eager and graph (--both fails unless their gradients are
    # equal), no cudaMalloc in the timed loop of either, and the per-layer profile
    p = run(["bench", "--model", "fashion_inception", "--device", "cuda", "--batch", "1,3", "--repeats", "3",
             "--warmup", "1", "--both"])
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    check(len(rows) == 4 and all(r["mallocs_in_loop"] == 0 for r in rows) and
          all(r["graph_vs_eager_max_abs"] == 0 and r["graph_nodes"] > 0 for r in rows if r["mode"] == "graph"),
          "bench --both: " + ", ".join(f"{r['mode']} b{r['batch']} {r['mallocs_in_loop']} mallocs in the loop"
                                       + (f" {r['graph_nodes']} graph nodes, gradient {r['graph_vs_eager_max_abs']} "
                                          "from eager's" if r["mode"] == "graph" else "") for r in rows))
    p = run(["bench", "--model", "fashion_inception", "--device", "cuda", "--batch", "2", "--repeats", "1",
             "--warmup", "0", "--layers", "--layers-json", f"{tmp}/layers.jsonl"])
    with open(f"{tmp}/layers.jsonl") as f:
        layers = [json.loads(line) for line in f if line.strip()]
    check(len(layers) > 20, f"bench --layers: {len(layers)} layer rows timed on the GPU")


def out_of_memory(tmp):  # the emulator only
    # 5. out of GPU memory at every stage: the emulator's memory capped (TRICK_EMU_MEMORY) from
    # too little for the model to just below what the attack needs (found by bisection to 4 KiB,
    # then 4 caps below it, where the last allocations fail). Each run either finishes or says
    # one error line and leaves no output.
    oom_runs = {}

    def capped(cap):
        if cap in oom_runs:
            return oom_runs[cap][0]
        out = f"{tmp}/oom_{cap}"
        p = attack(["7_sneaker.png", "5_sandal.png"], ["--steps", "20", "--device", "cuda"], out, want_rc=None,
                   env={"TRICK_EMU_MEMORY": str(cap)})
        lines = errors(p)
        left = sorted(os.listdir(out)) if os.path.isdir(out) else []
        if p.returncode == 3:
            ok = len(left) == 4 and not any(line.startswith("error") for line in lines)
        else:
            ok = (p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: out of memory: cannot allocate")
                  and "cuda:0" in lines[0] and not left)
        oom_runs[cap] = (p.returncode, lines[0] if lines else "", ok, left)
        return p.returncode

    caps = [16 << 10 << i for i in range(0, 11)]  # 16 KiB .. 16 MiB
    for cap in caps:
        capped(cap)
    lo = max((c for c in caps if oom_runs[c][0] == 1), default=0)
    hi = min((c for c in caps if oom_runs[c][0] == 3), default=0)
    check(0 < lo < hi, f"out of memory: fails at {lo} bytes, finishes at {hi}")
    while lo and hi and hi - lo > 4096:
        mid = (lo + hi) // 2
        if capped(mid) == 1:
            lo = mid
        else:
            hi = mid
    for k in range(1, 5):
        capped(hi - k * 4096)
    for c, r in sorted(oom_runs.items()):
        print(f"      {c:>9} bytes: exit {r[0]} {r[1][:110]}")
    bad = [(c, r) for c, r in sorted(oom_runs.items()) if not r[2]]
    check(not bad, f"out of memory: {len(oom_runs)} caps, the attack needs {hi} bytes; every run finished or said "
          f"one error line and left nothing: {bad[:3]}")
    check(any("loading the model" in r[1] for r in oom_runs.values()) and
          any("while attacking a batch of 2 images" in r[1] for r in oom_runs.values()),
          "out of memory: failures loading the model and while attacking, each naming what it was doing")


def faults(tmp):  # the emulator only
    # 8. CUDA calls failing (TRICK_EMU_FAULT, kernels/cuda/emu/emu.cpp says what each does)
    two, short = ["7_sneaker.png", "5_sandal.png"], ["--steps", "3", "--device", "cuda", "--no-animation"]
    p = attack(two, short, f"{tmp}/fault_none", want_rc=3, env={"TRICK_EMU_FAULT": "count"})
    made = calls_made(p)
    ref = folders(f"{tmp}/fault_none")
    ref_steps = summary(ref[0])["backend"]["cuda_graph_steps"]
    check(made["malloc"] > 100 and made["launch"] > 100 and made["capture"] == made["instantiate"] == 1 and
          ref_steps == 2, f"faults: a run without them makes {made}, 2 of its 3 steps from a graph")
    launches = sorted({1 + round(i * (made["launch"] - 1) / 23) for i in range(24)})
    specs = ([f"malloc:{n}+" for n in range(1, made["malloc"] + 1)] +
             [f"malloc:{n}" for n in range(1, made["malloc"] + 1)] + [f"launch:{n}" for n in launches] +
             ["capture:1", "capture:1+", "instantiate:1", "instantiate:1+"])

    def same_outputs(out):  # the run's outputs are those of the run without faults
        got = folders(out) if os.path.isdir(out) else []
        if len(got) != len(ref) or len(os.listdir(out)) != len(os.listdir(f"{tmp}/fault_none")):
            return False
        for a, b in zip(got, ref):
            ra = [{k: v for k, v in r.items() if k not in ("seconds", "l2_255")} for r in trace(a)]
            rb = [{k: v for k, v in r.items() if k not in ("seconds", "l2_255")} for r in trace(b)]
            if ra != rb or not np.array_equal(pixels(a), pixels(b)):
                return False
        return True

    def faulted(spec):
        out = f"{tmp}/fault_{spec.replace(':', '_').replace('+', 'on')}"
        p = attack(two, short, out, want_rc=None, env={"TRICK_EMU_FAULT": spec})
        lines, left = errors(p), os.listdir(out) if os.path.isdir(out) else []
        kind, survived = spec.split(":")[0], p.returncode == 3
        if survived:  # a passing shortage or a failed capture: those steps eagerly, with a note
            s = summary(folders(out)[0])["backend"]
            noted = [line for line in lines if line.startswith("note: some steps ran eagerly, not from a CUDA graph")]
            ok = (same_outputs(out) and len(lines) == len(noted) <= 1 and bool(noted) == bool(s["cuda_graph_failure"])
                  and s["cuda_graph_steps"] == (ref_steps if not noted else 0 if spec.endswith("+") else ref_steps - 1))
            what = f"finished, {s['cuda_graph_steps']} graph steps" + (" and a note" if noted else "")
        else:
            want = {"malloc": "error: out of memory: cannot allocate", "launch": "error: cuda: "}.get(kind, "-")
            ok = (p.returncode == 1 and len(lines) == 1 and lines[0].startswith(want) and not left and
                  (kind != "launch" or "unspecified launch failure (a kernel faulted" in lines[0]) and
                  (kind != "malloc" or "while " in lines[0]))  # what it was doing
            what = f"exit {p.returncode}: " + (lines[0][:100] if lines else "no message")
        shutil.rmtree(out, ignore_errors=True)
        return spec, survived, ok, what

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        runs = list(pool.map(faulted, specs))
    by = {spec: (survived, ok, what) for spec, survived, ok, what in runs}
    for spec in ["malloc:1+", f"malloc:{made['malloc']}+", "malloc:1", f"launch:{launches[-1]}", "capture:1",
                 "instantiate:1+"]:
        print(f"      {spec:>16}: {by[spec][2]}")
    bad = [(spec, what) for spec, survived, ok, what in runs if not ok]
    check(not bad, f"faults: {len(runs)} runs each finished as without faults or said one error line and left "
          f"nothing: {bad[:3]}")
    full = [by[f"malloc:{n}+"][0] for n in range(1, made["malloc"] + 1)]
    once = [by[f"malloc:{n}"] for n in range(1, made["malloc"] + 1)]
    check(not any(full), f"faults: memory full from each of the {len(full)} cudaMallocs on: every run stopped")
    check(all(s for s, _, _ in once) and any("and a note" in w for _, _, w in once),
          f"faults: each cudaMalloc failing once: every run finished (the cache freed and retried; in a capture "
          f"{sum('and a note' in w for _, _, w in once)} fell back to eager steps)")
    check(not any(by[f"launch:{n}"][0] for n in launches),
          f"faults: a kernel faulting at {len(launches)} points from the first kernel to the last: every run stopped")
    check(all(by[s][0] for s in ("capture:1", "capture:1+", "instantiate:1", "instantiate:1+")),
          "faults: a capture or an instantiation failing once or always: every run finished")

    grad = ["grad", os.path.join(SAMPLES, "7_sneaker.png"), "--target", "ankle boot", "--device", "cuda", "-o"]
    p = run(grad + [f"{tmp}/grad_none.npy"], env={"TRICK_EMU_FAULT": "count"})
    made = calls_made(p)
    g0 = np.load(f"{tmp}/grad_none.npy")

    def grad_faulted(spec):
        out = f"{tmp}/grad_{spec.replace(':', '_').replace('+', 'on')}.npy"
        p = run(grad + [out], want_rc=None, env={"TRICK_EMU_FAULT": spec})
        lines = errors(p)
        if spec.startswith("malloc") and not spec.endswith("+"):  # survives: the same gradient
            ok = p.returncode == 0 and not lines and np.array_equal(np.load(out), g0)
        else:
            want = "unspecified launch failure (a kernel faulted" if spec.startswith("launch") else \
                "error: out of memory: cannot allocate"
            ok = p.returncode == 1 and len(lines) == 1 and want in lines[0] and not os.path.exists(out) and \
                (spec.startswith("launch") or "while " in lines[0])
        return spec, ok, f"exit {p.returncode}: " + (lines[0][:90] if lines else "")

    specs = [f"{k}:{n}" for k in ("malloc", "launch") for n in range(1, made[k] + 1)]
    specs += [f"malloc:{n}+" for n in range(1, made["malloc"] + 1)]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        runs = list(pool.map(grad_faulted, specs))
    bad = [(spec, what) for spec, ok, what in runs if not ok]
    check(made["malloc"] > 100 and made["launch"] > 50 and not bad,
          f"faults: grad with each of its {made['malloc']} cudaMallocs failing once (the same gradient) and from it on, "
          f"and each of its {made['launch']} kernels faulting (one error line, no file): {len(runs)} runs, {bad[:3]}")

    bench = ["bench", "--model", "fashion_inception", "--device", "cuda", "--batch", "1", "--repeats", "1",
             "--warmup", "0", "--both"]
    for spec, what in (("capture:1", "forward"), ("capture:2", "attack step"), ("instantiate:2", "attack step")):
        p = run(bench, want_rc=1, env={"TRICK_EMU_FAULT": spec})
        lines = errors(p)
        check(len(lines) == 1 and lines[0].startswith("error: cuda graph: ") and
              f"(capturing the {what} of batch 1 for the graph row; --no-graph times eager only)" in lines[0] and
              '"mode": "eager"' in p.stdout and '"mode": "graph"' not in p.stdout,
              f"faults: bench with {spec}: the eager row, then {lines}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--gpu"]):
        print(__doc__)
        sys.exit(2)
    EMU, GPU = sys.argv[1], sys.argv[2:] == ["--gpu"]
    with tempfile.TemporaryDirectory() as tmp:
        if GPU:  # one line, not a page of failures, where there is no GPU (--device cuda would use the CPU)
            p = run(["info"], want_rc=None)
            if "cuda backend: compiled" not in p.stdout or "cuda devices: 0" in p.stdout or p.returncode:
                print(f"FAIL  --gpu: `{EMU} info` shows no CUDA backend or no device")
                sys.exit(1)
        main(tmp)
        if not GPU:
            out_of_memory(tmp)
            faults(tmp)
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)
    print("all passed")
