#!/usr/bin/python3
"""PyTorch on the work `trick bench` times on the CPU: torchvision's Inception v3 at 299x299
(random weights, eval mode, transform_input=True, no auxiliary head), frozen parameters,
an input that requires its gradient. Prints the median milliseconds of the forward pass and
of forward + input gradient (one attack step), with the process CPU time (all threads) per
call beside them, and the ratio trick / PyTorch when trick's JSON line is given (a ratio
<= 1 means trick is at least as fast).

  /usr/bin/python3 tools/bench_pytorch.py --threads 2 --repeats 20
  /usr/bin/python3 tools/bench_pytorch.py --threads 2 --trick-json bench.jsonl

--json prints one JSON line instead of the table (tools/bench_cpu.sh collects them).
Run with Debian's /usr/bin/python3 (the one with torch).
"""
import argparse
import json
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave PyTorch's default)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20, help="timed repeats; the median is printed")
    p.add_argument("--warmup", type=int, default=3, help="untimed repeats first")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--trick-json", help="file with trick bench's JSON line(s) for the ratio ('-': stdin)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    a = p.parse_args(argv)
    if a.threads < 0 or a.batch < 1 or a.repeats < 1 or a.warmup < 0:
        p.error("--threads >= 0, --batch >= 1, --repeats >= 1, --warmup >= 0")
    return a


def median_ms(fn, warmup, repeats):
    """Median wall and process CPU milliseconds (all threads) per call, after warm-up."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def read_trick(path, batch):
    """The last CPU row of trick bench's JSON lines with this batch size."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    row = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if d.get("engine", "trick") == "trick" and d.get("device", "cpu") == "cpu" and d.get("batch", 1) == batch:
            row = d
    if row is None:
        sys.exit(f"bench_pytorch: no trick CPU row with batch {batch} in {path}")
    return row


def main(argv):
    a = parse_args(argv)
    import torch
    import torchvision

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    # init_weights=False: torchvision's default init draws truncated normals through scipy,
    # slow and irrelevant to the timing (the weights are random either way).
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=True,
                                            init_weights=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(a.batch, 3, 299, 299)
    target = torch.ones(a.batch, dtype=torch.long)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            model(x)

    def step():
        xi = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xi), target, reduction="sum")
        loss.backward()
        return xi.grad

    fwd, fwd_cpu = median_ms(forward, a.warmup, a.repeats)
    stp, stp_cpu = median_ms(step, a.warmup, a.repeats)
    row = {"engine": "pytorch", "version": torch.__version__, "device": "cpu", "batch": a.batch,
           "threads": torch.get_num_threads(), "channels_last": a.channels_last, "forward_ms": round(fwd, 4),
           "step_ms": round(stp, 4), "forward_cpu_ms": round(fwd_cpu, 4), "step_cpu_ms": round(stp_cpu, 4),
           "repeats": a.repeats}
    trick = read_trick(a.trick_json, a.batch) if a.trick_json else None
    if trick:
        row["ratio_forward"] = round(trick["forward_ms"] / fwd, 4)
        row["ratio_step"] = round(trick["step_ms"] / stp, 4)
    if a.json:
        print(json.dumps(row))
        return 0
    print(f"PyTorch {torch.__version__}, {row['threads']} threads, batch {a.batch}, "
          f"{'channels_last' if a.channels_last else 'NCHW'}, median of {a.repeats}")
    print(f"{'':22}{'forward ms':>12}{'fwd+grad ms':>14}{'fwd+grad CPU ms':>18}")
    print(f"{'pytorch':22}{fwd:12.2f}{stp:14.2f}{stp_cpu:18.2f}")
    if trick:
        cpu = trick.get("step_cpu_ms")
        print(f"{'trick':22}{trick['forward_ms']:12.2f}{trick['step_ms']:14.2f}"
              f"{cpu if cpu is not None else float('nan'):18.2f}")
        print(f"{'ratio trick/pytorch':22}{row['ratio_forward']:12.3f}{row['ratio_step']:14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
