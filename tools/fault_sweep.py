#!/usr/bin/python3
"""Runs one trick command on the CUDA emulator with each CUDA call it makes failing in turn
(TRICK_EMU_FAULT, kernels/cuda/emu/README.md) and checks how each run ended.

usage: tools/fault_sweep.py TRICK_EMU [--launches N] [-j JOBS] -- COMMAND ARGS...

ARGS name the output, if the command writes one, as {out} (a new path per run), e.g.

    tools/fault_sweep.py build/trick_emu -- attack data/samples/fashion/7_sneaker.png \\
        --target "ankle boot" --steps 3 --device cuda --no-animation --out {out}

A run without faults counts the calls (TRICK_EMU_FAULT=count); then every cudaMalloc fails
once (malloc:N) and from it on (malloc:N+), N kernels spread from the first to the last fault
(launch:N; default 40), and each capture and instantiation fails once and from it on. Every
run must end with the exit status of the run without faults, or with exit status 1, exactly
one line on stderr starting "error:" and no {out}; never a signal or an emulator abort.
Prints each kind of ending with its count and exits 1 if any run broke the rule. (CI's
tests/emu_cli.py makes the same sweep, with the outputs compared, for attack and grad.)
"""
import collections
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile


def main(argv):
    if "--" not in argv or argv.index("--") < 1:
        print(__doc__)
        return 2
    cut = argv.index("--")
    opts, command = argv[:cut], argv[cut + 1:]
    binary, launches, jobs = opts[0], 40, os.cpu_count() or 2
    rest = opts[1:]
    while rest:
        if rest[0] == "--launches" and len(rest) > 1:
            launches, rest = int(rest[1]), rest[2:]
        elif rest[0] == "-j" and len(rest) > 1:
            jobs, rest = int(rest[1]), rest[2:]
        else:
            print(__doc__)
            return 2
    if not any("{out}" in a for a in command):
        print("note: the command names no {out}: no check that a failed run leaves no output")

    with tempfile.TemporaryDirectory() as tmp:
        def go(spec):
            out = os.path.join(tmp, spec.replace(":", "_").replace("+", "on"))
            args = [a.replace("{out}", out) for a in command]
            p = subprocess.run([binary] + args, capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, TRICK_EMU_FAULT=spec))
            left = os.path.exists(out)
            shutil.rmtree(out, ignore_errors=True) if os.path.isdir(out) else left and os.remove(out)
            return spec, p.returncode, p.stderr.splitlines(), left

        _, rc0, lines, _ = go("count")
        counts = [line for line in lines if "trick CUDA emulator: calls made:" in line]
        if not counts:
            print(f"error: the run without faults printed no call counts (exit {rc0}): {lines[-3:]}")
            return 1
        made = dict(zip(*[iter(counts[-1].split("calls made:")[-1].split(";")[0].split())] * 2))
        made = {k: int(v) for k, v in made.items()}
        print(f"without faults: exit {rc0}, {made}")
        specs = []
        for kind in ("malloc", "capture", "instantiate"):
            specs += [f"{kind}:{n}{later}" for n in range(1, made[kind] + 1) for later in ("", "+")]
        n = made["launch"]
        specs += [f"launch:{k}" for k in sorted({1 + round(i * (n - 1) / max(1, launches - 1))
                                                 for i in range(launches)})] if n else []
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            runs = list(pool.map(go, specs))

    endings, bad = collections.Counter(), []
    for spec, rc, lines, left in runs:
        errors = [line for line in lines if line.startswith("error:")]
        kind = spec.split(":")[0] + ("+" if spec.endswith("+") else "")
        first = (errors or [line for line in lines if line.startswith("note:")] or [""])[0]
        first = re.sub(r"\d[\d.]* (bytes|KiB|MiB|GiB)", "# \\1", first)  # one row per message, not per size
        first = re.sub(r" at /\S+:\d+:", " at ...:", first)  # nor per source line
        endings[(kind, rc, first[:100])] += 1
        ok = (rc == rc0 and not errors) or (rc == 1 and len(errors) == 1 and not left)
        if not ok or any("trick CUDA emulator:" in line for line in lines):
            bad.append((spec, rc, errors[:2] or lines[-2:], "output left" if left else ""))
    for (kind, rc, first), count in sorted(endings.items()):
        print(f"{count:5} x {kind:12} exit {rc:3}  {first}")
    print(f"{len(runs)} runs, {len(bad)} broke the rule" + (f": {bad[:5]}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
