#!/usr/bin/env python3
"""The PyTorch side of tools/gpu_check.sh, and the table that merges both sides.

  bench_gpu.py time  [--batch 1,64,256] [--repeats N] [--warmup N] [--math fp32,tf32,bf16] [--modes eager,graph]
      Times torchvision's Inception v3 (random weights, eval mode, no auxiliary head,
      transform_input off: trick's model takes pixels in [0, 1] and its first op is the one
      affine 2x - 1) on the GPU: the forward pass, and forward + gradient of the summed
      cross-entropy with respect to the input only (parameters frozen, so no weight
      gradients: one attack step's work). Eager, and replayed from CUDA graphs
      (torch.cuda.CUDAGraph). For fairness the model and input are channels_last (NHWC, the
      layout trick uses and cuDNN's fast path) and cudnn.benchmark is on (PyTorch picks its
      fastest cuDNN algorithm per layer). fp32: TF32 off for convolutions and matmuls;
      tf32: on; bf16: torch.autocast(bfloat16), PyTorch's bf16 mode (it also keeps the
      activations in bf16 between ops, where trick keeps fp32 tensors and rounds only the
      products' inputs). Time: CUDA events around each repeat, the median after warm-up.
      Prints one JSON line per (math, mode, batch).

  bench_gpu.py table FILE... [--out table.md]
      Reads JSON lines (trick bench and the above; other lines are skipped) and prints one
      table: ms, images (or image-steps) per second, achieved TFLOP/s (Inception v3:
      11.43 GFLOP per image forward, 22.85 per attack step), and the ratio of throughput
      against PyTorch eager at the same precision and batch. Rows with "failed" print FAILED.

  bench_gpu.py layers FILE... [--out layers.md]
      Reads `trick bench --layers --layers-json FILE` rows and prints each layer's forward +
      backward ms with one column per run (conv backend, precision, batch), the fastest
      marked, then the same summed by kind of layer with the achieved TFLOP/s.

Needs PyTorch with CUDA for `time`; `table` and `layers` need only the standard library.
"""
import argparse
import json
import statistics
import sys
import time

GFLOP_FORWARD = 11.43
GFLOP_STEP = 22.85


def emit(row):
    print(json.dumps(row), flush=True)


def set_tf32(torch, on):
    """TF32 for cuDNN convolutions and cuBLAS matmuls (the newer per-backend API when present)."""
    how = "allow_tf32"
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
        how = "fp32_precision"
    except Exception:  # older PyTorch (an AssertionError in 1.13, AttributeError elsewhere)
        pass
    if how == "allow_tf32":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    return how


def cmd_time(args):
    try:
        import torch
        import torch.nn.functional as F
        import torchvision
    except ImportError as e:
        emit({"engine": "pytorch", "failed": f"cannot import PyTorch/torchvision: {e}"})
        return 1
    if not torch.cuda.is_available():
        emit({"engine": "pytorch", "failed": "torch.cuda.is_available() is False"})
        return 1
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=False,
                                            init_weights=True)
    model.eval().to(dev).to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    name = torch.cuda.get_device_name(0)

    def events_ms(fn, warmup, repeats):
        ts = []
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for i in range(warmup + repeats):
            a.record()
            fn()
            b.record()
            b.synchronize()
            if i >= warmup:
                ts.append(a.elapsed_time(b))
        return statistics.median(ts)

    import contextlib

    for math in args.math.split(","):
        how = set_tf32(torch, math == "tf32")
        # Autocast inside a CUDA graph capture needs its weight cache off.
        amp = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)) if math == "bf16" else
               contextlib.nullcontext)
        for batch in [int(b) for b in args.batch.split(",")]:
            x = torch.rand(batch, 3, 299, 299, device=dev).contiguous(memory_format=torch.channels_last)
            targets = torch.ones(batch, dtype=torch.long, device=dev)

            def forward():
                with torch.no_grad(), amp():
                    return model(x)

            xg = x.clone().requires_grad_(True)

            def step():
                with amp():
                    loss = F.cross_entropy(model(xg).float(), targets, reduction="sum")
                return torch.autograd.grad(loss, xg)[0]

            eager_grad = None
            for mode in args.modes.split(","):
                row = {"engine": "pytorch", "torch": torch.__version__, "device": name, "math": math,
                       "mode": mode, "batch": batch, "channels_last": True,
                       "cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32_api": how,
                       "repeats": args.repeats}
                t0 = time.time()
                try:
                    if mode == "eager":
                        row["forward_ms"] = events_ms(forward, args.warmup, args.repeats)
                        row["step_ms"] = events_ms(step, args.warmup, args.repeats)
                        eager_grad = step().detach().clone()
                    else:
                        # Warm up on a side stream (cuDNN autotuning, allocator), then capture.
                        side = torch.cuda.Stream()
                        side.wait_stream(torch.cuda.current_stream())
                        with torch.cuda.stream(side):
                            for _ in range(3):
                                forward()
                                step()
                        torch.cuda.current_stream().wait_stream(side)
                        gf = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(gf):
                            forward()
                        row["forward_ms"] = events_ms(gf.replay, args.warmup, args.repeats)
                        del gf
                        gs = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(gs):
                            static_grad = step()
                        row["step_ms"] = events_ms(gs.replay, args.warmup, args.repeats)
                        if eager_grad is not None:
                            row["graph_vs_eager_max_abs"] = float((static_grad - eager_grad).abs().max())
                        del gs, static_grad
                except Exception as e:  # one failed configuration must not stop the others
                    row["failed"] = f"{type(e).__name__}: {e}"[:300]
                row["seconds"] = round(time.time() - t0, 2)
                emit(row)
                try:  # a sticky error after a failed capture fails the rows after it, not the script
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception:
                    pass
            del x, xg, eager_grad
            torch.cuda.empty_cache()
    return 0


DEFAULT_SPLIT_K = "8,64"  # SplitKPolicy's default in kernels/backend.h


def label(r):
    if r.get("engine") == "trick":
        name = "trick " + r.get("conv", "?")
        if r.get("conv") == "own" and r.get("split_k", DEFAULT_SPLIT_K) != DEFAULT_SPLIT_K:
            name += " k" + r["split_k"]  # a --split-k sweep row
        if r.get("conv") == "cudnn" and r.get("cudnn_algo", "measure") != "measure":
            name += " " + r["cudnn_algo"][:5]  # --cudnn-algo heuristic
        return name
    return str(r.get("engine", "?"))


def cmd_table(args):
    rows = []
    for path in args.files:
        try:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("{"):
                        try:
                            r = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if "engine" in r:
                            rows.append(r)
        except OSError as e:
            rows.append({"engine": "?", "failed": f"cannot read {path}: {e}"})
    peer = {}
    for r in rows:
        if r.get("engine") == "pytorch" and r.get("mode") == "eager" and "failed" not in r:
            peer[(r["math"], r["batch"])] = r

    def ips(r, key):
        ms = r.get(key)
        return r["batch"] / (ms / 1e3) if ms else None

    order = {"pytorch": 0}
    rows.sort(key=lambda r: (r.get("math", ""), r.get("batch", 0), order.get(label(r), 1), label(r),
                             r.get("mode", "")))
    head = (f"{'engine':18s} {'math':4s} {'mode':5s} {'batch':>5s} | {'fwd ms':>8s} {'img/s':>8s} {'TFLOP/s':>7s}"
            f" {'x eager':>7s} | {'step ms':>8s} {'steps/s':>8s} {'TFLOP/s':>7s} {'x eager':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "failed" in r:
            what = " ".join(str(r.get(k, "")) for k in ("conv", "math", "mode", "batch") if k in r)
            lines.append(f"{label(r):18s} FAILED {what}: {r['failed']}"[:len(head) + 40])
            continue
        p = peer.get((r.get("math"), r.get("batch")))
        cells = []
        for key, gflop in (("forward_ms", GFLOP_FORWARD), ("step_ms", GFLOP_STEP)):
            rate = ips(r, key)
            prate = ips(p, key) if p else None
            ratio = f"{rate / prate:7.2f}" if rate and prate else f"{'-':>7s}"
            cells.append(f"{r[key]:8.2f} {rate:8.1f} {rate * gflop / 1e3:7.1f} {ratio}" if rate else
                         f"{'-':>8s} {'-':>8s} {'-':>7s} {'-':>7s}")
        math = r.get("math", "?")
        lines.append(f"{label(r):18s} {math:4s} {r.get('mode', '?'):5s} {r.get('batch', 0):5d} | {cells[0]} | "
                     f"{cells[1]}")
    notes = ["x eager: throughput over PyTorch eager's at the same precision and batch (>1: faster).",
             "TFLOP/s: Inception v3 at 11.43 GFLOP per image forward, 22.85 per attack step (forward + input",
             "gradient). tf32 rows: faster, less exact (random Inception's logits ~6e-4 from fp32); bf16 rows: least exact",
             "(~5e-3; trick: fp32 tensors, products' inputs rounded to bf16; PyTorch: autocast, bf16 activations).",
             "Errors by network and image: `trick precision` (docs/benchmarks.md, TF32 and bf16 against fp32).",
             "PyTorch: channels_last, cudnn.benchmark on, BN not folded; trick: BN folded into the convolutions."]
    text = "\n".join(lines + [""] + notes)
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        import os
        os.replace(args.out + ".tmp", args.out)
    return 0


def cmd_ncu_summary(args):
    """Nsight Compute `--csv --page raw` output (gpu__time_duration.sum per launch) summed by
    kernel name: total and share of the GPU time, launches, mean grid size; the top 20."""
    import csv
    with open(args.file, errors="replace") as f:
        lines = [ln for ln in f if not ln.startswith("==")]
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        print(f"{args.file}: no ncu CSV table found")
        return 1
    rows = list(csv.reader(lines[start:]))
    head, units, data = rows[0], rows[1], rows[2:]
    col = {name: i for i, name in enumerate(head)}
    t, g = col.get("gpu__time_duration.sum"), col.get("launch__grid_size")
    k = col.get("Kernel Name")
    if t is None or k is None:
        print(f"{args.file}: no kernel name or duration column")
        return 1
    scale = {"ns": 1e-6, "nsecond": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0, "s": 1e3,
             "second": 1e3}.get(units[t].strip(), 1e-6)
    by = {}
    for r in data:
        if len(r) <= max(t, k):
            continue
        try:
            ms = float(r[t].replace(",", "")) * scale
        except ValueError:
            continue
        e = by.setdefault(r[k], [0.0, 0, 0.0])  # grouped by the full name, cut when printed
        e[0] += ms
        e[1] += 1
        if g is not None:
            try:
                e[2] += float(r[g].replace(",", ""))
            except ValueError:
                pass
    total = sum(e[0] for e in by.values())
    print(f"{args.file}: {sum(e[1] for e in by.values())} launches, {total:.2f} ms of kernel time")
    print(f"{'ms':>9} {'share':>6} {'launches':>8} {'mean grid':>9}  kernel")
    for name, (ms, n, grid) in sorted(by.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"{ms:9.3f} {100 * ms / max(total, 1e-12):5.1f}% {n:8d} {grid / max(n, 1):9.0f}  {name[:100]}")
    return 0


def cmd_layers(args):
    """`trick bench --layers --layers-json F` files, one column per run (conv backend,
    precision, batch): each layer's forward + backward ms side by side, the fastest of the
    runs at the same batch marked, then the same by kind of layer (conv2d 1x1, conv2d 3x3/2,
    ...) with the achieved TFLOP/s."""
    import json
    runs, order, info = {}, [], {}
    for path in args.files:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                key = f"{r['conv']} {r['math']} b{r['batch']}"
                run = runs.setdefault(key, {"layers": {}, "step": None, "batch": r["batch"]})
                if r.get("layer") is None:
                    run["step"] = r["step_ms"]
                    continue
                k = (r["index"], r["layer"])
                if k not in info:
                    order.append(k)
                    info[k] = r
                run["layers"][k] = (r["forward_ms"] + r["backward_ms"], r["gflop_forward"] + r["gflop_backward"])
    if not runs:
        print("layers: no rows")
        return 1
    keys = list(runs)

    def kind(r):
        windowed = r["ops"] in ("conv2d", "max_pool2d", "avg_pool2d")
        return r["ops"] + (" " + r["shape"].split(" ")[0] if windowed and r["shape"] else "")

    out = ["Forward + backward ms per layer (medians; * the fastest run at its batch size)", "",
           "| # | layer | shape | GFLOP per image | " + " | ".join(keys) + " |",
           "| ---: | --- | --- | ---: | " + " | ".join("---:" for _ in keys) + " |"]
    kinds = {}
    for k in order:
        r = info[k]
        got = [runs[c]["layers"].get(k) for c in keys]
        cells = []
        for c, g in zip(keys, got):
            if g is None:
                cells.append("-")
                continue
            same = [runs[d]["layers"][k][0] for d in keys if runs[d]["batch"] == runs[c]["batch"] and k in runs[d]["layers"]]
            cells.append(f"{g[0]:.3f}" + ("*" if len(same) > 1 and g[0] == min(same) else ""))
        per_image = (r["gflop_forward"] + r["gflop_backward"]) / r["batch"]
        out.append(f"| {k[0]} | {k[1]} | {r['shape']} | {per_image:.4f} | " + " | ".join(cells) + " |")
        e = kinds.setdefault(kind(r), [0, [0.0] * len(keys), [0.0] * len(keys)])
        e[0] += 1
        for i, g in enumerate(got):
            if g is not None:
                e[1][i] += g[0]
                e[2][i] += g[1]
    out.append("| | step (profiled) | | | " + " | ".join(
        "-" if runs[c]["step"] is None else f"{runs[c]['step']:.3f}" for c in keys) + " |")
    out += ["", "By kind of layer: ms (forward + backward) and, where the work is counted, (TFLOP/s)", "",
            "| kind | layers | " + " | ".join(keys) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |"]
    for name, (n, ms, gf) in sorted(kinds.items(), key=lambda kv: -max(kv[1][1])):
        cells = [f"{v:.3f}" + (f" ({g / v:.3g})" if g > 0 and v > 0 else "") for v, g in zip(ms, gf)]
        out.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out:
        import os
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--batch", default="1,64,256")
    t.add_argument("--repeats", type=int, default=15)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--math", default="fp32,tf32,bf16")
    t.add_argument("--modes", default="eager,graph")
    t.add_argument("--no-cudnn-benchmark", action="store_true")
    tb = sub.add_parser("table")
    tb.add_argument("files", nargs="+")
    tb.add_argument("--out")
    nc = sub.add_parser("ncu-summary")
    nc.add_argument("file")
    ly = sub.add_parser("layers")
    ly.add_argument("files", nargs="+")
    ly.add_argument("--out")
    args = ap.parse_args()
    if args.cmd == "ncu-summary":
        return cmd_ncu_summary(args)
    if args.cmd == "layers":
        return cmd_layers(args)
    return cmd_time(args) if args.cmd == "time" else cmd_table(args)


if __name__ == "__main__":
    sys.exit(main())
