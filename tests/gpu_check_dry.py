"""tools/gpu_check.sh where there is no GPU: every stage must be reached and fail for want of a
device, not for a command line that no longer parses.

The prepared check runs on a lent H200 only now and then, with minutes of device time; a
renamed option or a test filter that matches nothing would waste that run. Here it runs on this
build's binaries (GPU_CHECK_BIN, no build) in a few seconds, and this checks:
- it ends with its summary, table and logs, and skips the build as asked;
- the CUDA tests' filter selects the GPU tests (and each fails: TRICK_REQUIRE_CUDA is set),
  the Inception filter exactly one test; the command's checks (tests/emu_cli.py --gpu) stop
  at once saying there is no device;
- every `trick bench` stage exits 1 with one `error:` line (no device), never 2 (a command-line
  mistake), and the table has a row for each configuration;
- bench_gpu.py (PyTorch's side) parses its arguments and reports why it did not time;
- with GPU_CHECK_LAYERS=1, each `trick bench --layers` stage also exits 1, not 2;
- GPU_CHECK_EMU (the whole check on the CUDA emulator, about 6 minutes: not run here) says
  in one line when the folder lacks the emulator's binaries.
Skipped (exit 77) where a GPU is present: run tools/gpu_check.sh itself there.

usage: gpu_check_dry.py BINARY_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def run_check(root, bin_dir, out, **extra_env):
    """tools/gpu_check.sh on the binaries in bin_dir, its files in out: (exit status, console)."""
    env = dict(os.environ, OUT=out, GPU_CHECK_BIN=bin_dir, GPU_CHECK_BUDGET="300", GPU_CHECK_PYTHON=sys.executable,
               **extra_env)
    r = subprocess.run(["bash", os.path.join(root, "tools", "gpu_check.sh")], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def main(argv):
    if len(argv) != 1:
        print(__doc__)
        return 2
    bin_dir = os.path.abspath(argv[0])
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True).returncode == 0:
        print("skipped: a GPU is present here; run tools/gpu_check.sh itself")
        return SKIP
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as out:
        status, console = run_check(root, bin_dir, out)
        print(console)
        if status != 0:
            fail(f"gpu_check.sh exited {status}")
        for f in ["summary.txt", "table.md", "versions.log", "build.log", "tests.log", "inception.log",
                  "bench_trick.log", "bench_torch.log"]:
            if not os.path.isfile(os.path.join(out, f)):
                fail(f"gpu_check.sh wrote no {f}")
        read = lambda f: open(os.path.join(out, f)).read()
        summary, table = read("summary.txt"), read("table.md")
        if "build: skipped, the binaries in GPU_CHECK_BIN" not in summary:
            fail("the build was not skipped with GPU_CHECK_BIN set")

        # The test filters select what they should.
        def cases(log):
            m = re.findall(r"\[doctest\] test cases: +(\d+) \| +(\d+) passed \| +(\d+) failed", read(log))
            if not m:
                fail(f"{log} has no doctest summary")
            return tuple(int(x) for x in m[-1])
        total, passed, failed = cases("tests.log")
        if total < 20 or failed < 20:
            fail(f"the 'cuda tests' filter selected {total} test cases, {failed} failing without a GPU: "
                 f"expected the GPU tests (20 or more), each failing with TRICK_REQUIRE_CUDA set")
        total, passed, failed = cases("inception.log")
        if (total, failed) != (1, 1):
            fail(f"the 'inception gpu vs cpu' filter selected {total} test cases ({failed} failed): expected 1")
        # The command's checks: reached, and stopped at once for want of a device.
        if not re.search(r"^\[\d+s\] command gpu vs cpu: FAILED \(exit 1,", console, re.M) or \
                "FAIL  --gpu: " not in read("tests.log"):
            fail("the 'command gpu vs cpu' stage did not stop with tests/emu_cli.py's no-device line")

        # Every trick bench stage: exit 1 with its error line, never a command-line mistake.
        stages = re.findall(r"^\[\d+s\] (bench trick [^:]+): (.*)$", console, re.M)
        if len(stages) < 10:
            fail(f"only {len(stages)} 'bench trick' stages ran")
        for name, result in stages:
            if not result.startswith("FAILED (exit 1,"):
                fail(f"stage '{name}': {result} (expected exit 1: no device)")
        errors = [l for l in read("bench_trick.log").splitlines() if l.startswith("error:")]
        if len(errors) != len(stages) or any("argument" in e or "--help" in e for e in errors):
            fail(f"{len(stages)} bench stages but these error lines: {errors}")
        for name, _ in stages:
            words = name.split()  # bench trick CONV MATH [...]
            row = rf"trick {words[2]} +FAILED {words[2]} {re.escape(' '.join(words[3:]).replace('split-k', 'fp32 split-k'))}"
            if not re.search(row, table):
                fail(f"table.md has no row for stage '{name}' ({row})")

        # PyTorch's side: reached, and says why it did not time.
        torch_log = read("bench_torch.log")
        if not re.search(r'\{"engine": "pytorch", "failed": "[^"]+"\}', torch_log):
            fail(f"bench_gpu.py time wrote no failure record: {torch_log[-500:]}")
        if "usage:" in torch_log or "error: argument" in torch_log:
            fail(f"bench_gpu.py did not parse its arguments: {torch_log[-500:]}")

    # GPU_CHECK_LAYERS=1 (every layer's time per configuration): its trick bench --layers runs.
    with tempfile.TemporaryDirectory() as out:
        status, console = run_check(root, bin_dir, out, GPU_CHECK_LAYERS="1")
        layer_stages = re.findall(r"^\[\d+s\] (layers \S+): (.*)$", console, re.M)
        if status != 0 or len(layer_stages) < 3:
            fail(f"GPU_CHECK_LAYERS=1: exit {status}, {len(layer_stages)} layer stages:\n{console}")
        for name, result in layer_stages:
            if not result.startswith("FAILED (exit 1,"):
                fail(f"GPU_CHECK_LAYERS=1: stage '{name}': {result} (expected exit 1: no device)\n{console}")
    # GPU_CHECK_EMU (the rehearsal on the CUDA emulator) pointed where its binaries are not.
    with tempfile.TemporaryDirectory() as out:
        status, console = run_check(root, bin_dir, out, GPU_CHECK_EMU=out)
        if status != 1 or not console.startswith(f"error: GPU_CHECK_EMU={out}: no trick_emu"):
            fail(f"GPU_CHECK_EMU without the emulator's binaries: exit {status}, {console[:300]}")
    print(f"ok: {len(stages)} bench stages, the test filters, the table and {len(layer_stages)} layer stages, "
          "without a GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
