"""What one accelerator does with the proxies: the device's matmul peak (bfloat16 and
float32), and for the dense, GLaM (top-2), Switch (top-1) and GLaM-EC (expert choice)
blocks at the `proxy-gpu` size: step time, tokens/s and MFU, each MoE block's step time over
a dense block of the same activated FLOPs (`search_space.cost.flop_matched_dense`), and the
throughput of four trials sharing the device against one trial alone.

It runs on whatever device JAX finds, with the trainer's own compiled steps, pipelined as a
trial runs them (`workers.trainer.Steps`), on random tokens. Four trials per device are four
processes, each holding a quarter of the device's memory (XLA_PYTHON_CLIENT_MEM_FRACTION, as
a worker with `gpus_per_trial: 0.25` does), timed over the same window.

    python bench/accelerator.py --json bench/out/accelerator.json     # < 4 min on one GPU
    python bench/accelerator.py --quick --json bench/out/accel.json   # small, < 2 min on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BLOCKS = ("dense", "glam", "switch", "glam-ec")
SHARED = 4  # trials per device in the sharing measurement
MEMORY_SHARE = 0.9 / SHARED  # as workers.actor sets it for gpus_per_trial 0.25


def sizes(quick: bool) -> dict[str, Any]:
    """The space, batch and timing of a run: proxy-gpu, or a few-layer proxy-cpu (--quick)."""
    from search_space.space import PROXY_CPU, get_preset

    if not quick:
        return {"space": get_preset("proxy-gpu"), "batch": 32, "steps": 30, "share_s": 20.0}
    small = PROXY_CPU.override(
        {"name": "accelerator-quick", "min_layers": 4, "max_layers": 4, "d_model": [64],
         "ffn_hidden": [128], "moe_hidden": [128], "attention_heads": [2], "seq_len": 32}
    )  # fmt: skip
    return {"space": small, "batch": 16, "steps": 5, "share_s": 3.0}


def random_batches(batch: int, seq_len: int, vocab: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    while True:
        yield rng.integers(0, vocab, size=(batch, seq_len + 1), dtype=np.int32)


def warm_steps(spec: Any, batch: int, precision: str, seed: int = 0) -> Any:
    """`spec`'s compiled train step on random tokens, pipelined as a trial runs it, after 2
    untimed steps."""
    from flax import nnx

    from workers.model import build_model
    from workers.trainer import PRECISIONS, Steps, TrainConfig, compile_program

    config = TrainConfig(batch_size=batch, precision=precision)
    graphdef, params = nnx.split(build_model(spec, seed, PRECISIONS[precision]))
    program = compile_program(graphdef, config, params, (batch, spec.seq_len + 1))
    batches = random_batches(batch, spec.seq_len, spec.vocab_size, seed)
    steps = Steps(program, params, batches, 2)
    steps.run(2)
    return steps


def measure_block(spec: Any, batch: int, steps: int, precision: str) -> dict[str, Any]:
    """Compile `spec`'s train step and time `steps` pipelined steps after 2 untimed ones."""
    import numpy as np

    from search_space.cost import cost

    runner = warm_steps(spec, batch, precision)
    seconds = float(np.median([s for _, s in runner.run(steps)]))
    report = cost(spec)
    tokens_per_s = batch * spec.seq_len / seconds
    return {
        "step_ms": 1e3 * seconds,
        "tokens_per_s": tokens_per_s,
        "train_flops_per_s": report.train_flops_per_token * tokens_per_s,
        "flops_per_token": report.flops_per_token,
        "params_activated": report.params_activated,
        "params_total": report.params_total,
        "compile_s": runner.program.compile_s,
    }


def child(args: argparse.Namespace) -> None:
    """One trial of the sharing measurement: compile, say ready, train from the start time
    for the window, print the steps done in it."""
    from search_space import baseline

    size = sizes(args.quick)
    spec = baseline("dense", size["space"])
    runner = warm_steps(spec, size["batch"], args.precision, args.seed)
    Path(args.sync, f"ready-{args.seed}").touch()
    go = Path(args.sync, "go")
    while not go.exists():
        time.sleep(0.01)
    start, end = (float(x) for x in go.read_text().split())
    while time.time() < start:
        time.sleep(0.001)
    done = 0
    while time.time() < end:
        runner.run(1)
        done += 1
    print(json.dumps({"steps": done, "seconds": end - start}))


def throughput(trials: int, args: argparse.Namespace, window: float) -> dict[str, Any]:
    """Tokens/s of `trials` processes training the dense block together over one window."""
    size = sizes(args.quick)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if trials > 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{MEMORY_SHARE:.3f}"
    with tempfile.TemporaryDirectory() as sync:
        command = [sys.executable, __file__, "--child", "--sync", sync,
                   "--precision", args.precision, *(["--quick"] if args.quick else [])]  # fmt: skip
        procs = [
            subprocess.Popen(
                [*command, "--seed", str(i)], env=env, stdout=subprocess.PIPE, text=True
            )
            for i in range(trials)
        ]
        while sum(Path(sync, f"ready-{i}").exists() for i in range(trials)) < trials:
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a trial of the sharing measurement failed")
            time.sleep(0.05)
        start = time.time() + 0.5
        Path(sync, "go").write_text(f"{start} {start + window}")
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    spec_tokens = size["batch"] * size["space"].seq_len
    steps = sum(r["steps"] for r in results)
    return {"trials": trials, "steps": steps, "tokens_per_s": steps * spec_tokens / window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU smoke run)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), help="default: device's")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from workers.device import default_precision, fingerprint, matmul_peak_flops

    args.precision = args.precision or default_precision()
    if args.child:
        child(args)
        return
    from figures import write_json

    from search_space import baseline
    from search_space.cost import flop_matched_dense
    from search_space.specs import spec_hash

    began = time.perf_counter()
    size = sizes(args.quick)
    n = None if args.quick else 8192  # quick: the trainer's own size for the device
    peaks = {dtype: matmul_peak_flops(n, 5, dtype) for dtype in ("float32", "bfloat16")}
    peak = peaks[args.precision]
    blocks: dict[str, dict[str, Any]] = {}
    measured: dict[str, dict[str, Any]] = {}  # by spec hash: a matched dense may repeat one

    def measure(spec: Any) -> dict[str, Any]:
        key = spec_hash(spec)
        if key not in measured:
            measured[key] = measure_block(spec, size["batch"], size["steps"], args.precision)
        return dict(measured[key])

    for name in BLOCKS:
        spec = baseline(name, size["space"])
        figures = measure(spec)
        figures["mfu"] = figures["train_flops_per_s"] / peak
        if name != "dense":
            matched = measure(flop_matched_dense(spec))
            figures["matched_dense_step_ms"] = matched["step_ms"]
            figures["vs_matched_dense"] = figures["step_ms"] / matched["step_ms"]
        blocks[name] = figures
    one = throughput(1, args, size["share_s"])
    shared = throughput(SHARED, args, size["share_s"])
    device = fingerprint()
    result = {
        "device": device,
        "quick": args.quick,
        "space": size["space"].name,
        "batch_size": size["batch"],
        "seq_len": size["space"].seq_len,
        "precision": args.precision,
        "matmul_peak_tflops": {k: v / 1e12 for k, v in peaks.items()},
        "blocks": blocks,
        "sharing": {
            "one": one,
            "shared": shared,
            "speedup": shared["tokens_per_s"] / one["tokens_per_s"],
        },
        "wall_s": time.perf_counter() - began,
    }
    print(
        f"{device['device_kind']} ({device['platform']}), {args.precision}, "
        f"{size['space'].name} at batch {size['batch']} x {size['space'].seq_len}; "
        f"matmul peak {peaks['bfloat16'] / 1e12:.3g} TFLOP/s bf16, "
        f"{peaks['float32'] / 1e12:.3g} fp32"
    )
    print(f"{'block':>8} {'step ms':>9} {'tokens/s':>11} {'MFU':>6} {'vs dense (FLOPs =)':>19}")
    for name, f in blocks.items():
        ratio = f"{f['vs_matched_dense']:.2f}x" if "vs_matched_dense" in f else "-"
        print(
            f"{name:>8} {f['step_ms']:9.1f} {f['tokens_per_s']:11.0f} {f['mfu']:6.1%} {ratio:>19}"
        )
    print(
        f"{SHARED} trials per device: {shared['tokens_per_s']:.0f} tokens/s vs "
        f"{one['tokens_per_s']:.0f} for one ({result['sharing']['speedup']:.2f}x); "
        f"{result['wall_s']:.0f} s in all"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
