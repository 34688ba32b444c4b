"""Baseline capacity: step time of the GLaM baseline at the old and the sources' capacity.

The GLaM baseline is the constrained mode's step-time reference. It was top-2 at capacity 2
(four experts' worth of slots per token in this project's convention); GShard's 2N/E slots
per expert are capacity 1 here (see `search_space/baselines.py`). This times both at the
proxy-cpu size with the trainer's own compiled train step (`workers.trainer.compile_program`,
batch 16), interleaved so that the machine's load falls alike on every block: a repeat is
rounds in which each block, in an order rotating between rounds, takes an untimed warm-up
step and then a chunk of steps timed one by one with `block_until_ready`.
GLaM with expert choice (capacity 2, unchanged) is timed alongside: it computes the same
slots as the new GLaM. Switch is unchanged in both presets (1.25 rounds to 1), so not timed.

    python bench/baseline_capacity.py --json bench/out/baseline_capacity.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax.numpy as jnp
from figures import write_json
from flax import nnx
from proxy_throughput import DEFAULT_DATA

from search_space import PRESETS, ArchSpec, baseline, cost
from search_space.specs import MoESpec
from workers.data import load_dataset
from workers.device import fingerprint
from workers.model import build_model
from workers.trainer import TrainConfig, compile_program


def with_capacity(spec: ArchSpec, capacity: float) -> ArchSpec:
    """The spec with every MoE layer at `capacity`."""
    layers = tuple(
        layer.model_copy(update={"capacity_factor": capacity})
        if isinstance(layer, MoESpec)
        else layer
        for layer in spec.block.layers
    )
    return spec.model_copy(update={"block": spec.block.model_copy(update={"layers": layers})})


class Runner:
    """One block's compiled train step, its training state and its batches."""

    def __init__(self, spec: ArchSpec, config: TrainConfig, dataset, seed: int = 0):
        graphdef, self.params = nnx.split(build_model(spec, seed))
        shape = (config.batch_size, spec.seq_len + 1)
        self.program = compile_program(graphdef, config, self.params, shape)
        self.opt_state = self.program.optimizer.init(self.params)
        self.batches = dataset.train_batches(config.batch_size, spec.seq_len, seed)

    def steps(self, n: int) -> list[float]:
        """Run `n` steps; the seconds of each."""
        times = []
        for _ in range(n):
            batch = jnp.asarray(next(self.batches))
            begin = time.perf_counter()
            self.params, self.opt_state, loss = self.program.train_step(
                self.params, self.opt_state, batch
            )
            loss.block_until_ready()
            times.append(time.perf_counter() - begin)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=f"text:{DEFAULT_DATA}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block a repeat")
    parser.add_argument("--chunk", type=int, default=5, help="timed steps per block a round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before a chunk")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    config = TrainConfig(batch_size=args.batch_size)
    proxy = PRESETS["proxy-cpu"]
    glam = baseline("glam", proxy)
    blocks = {
        "glam, top-2 c=2 (old)": with_capacity(glam, 2.0),
        "glam, top-2 c=1 (new)": glam,
        "glam-ec, c=2 (unchanged)": baseline("glam-ec", proxy),
    }
    runners, compile_s = {}, {}
    for name, spec in blocks.items():
        start = time.perf_counter()
        runners[name] = Runner(spec, config, dataset)
        runners[name].steps(1)  # the first call of a compiled program does one-off work
        compile_s[name] = time.perf_counter() - start

    names = list(blocks)
    per_repeat: dict[str, list[float]] = {name: [] for name in names}
    all_steps: dict[str, list[float]] = {name: [] for name in names}
    rounds = max(1, args.steps // args.chunk)
    for repeat in range(args.repeats):
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(rounds):
            shift = (repeat * rounds + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                runners[name].steps(args.warmup)
                times[name].extend(runners[name].steps(args.chunk))
        for name in names:
            per_repeat[name].append(statistics.median(times[name]))
            all_steps[name].extend(times[name])

    old, new = names[0], names[1]
    ratios = [n / o for n, o in zip(per_repeat[new], per_repeat[old], strict=True)]
    rows = {}
    for name, spec in blocks.items():
        medians = per_repeat[name]
        moe = spec.block.layers[3]
        rows[name] = {
            "gating": moe.gating,
            "capacity_factor": moe.capacity_factor,
            "train_flops_per_token": cost(spec).train_flops_per_token,
            "compile_s": compile_s[name],
            "step_ms_median": 1e3 * statistics.median(all_steps[name]),
            "step_ms_repeat_medians": [1e3 * m for m in medians],
            "step_ms_min": 1e3 * min(medians),
            "step_ms_max": 1e3 * max(medians),
        }

    print(
        f"proxy-cpu, batch {args.batch_size} x {proxy.seq_len} tokens; "
        f"{args.repeats} repeats x {rounds * args.chunk} timed steps per block"
    )
    print(f"{'block':26} {'train MFLOP/tok':>15} {'step ms':>8}  repeat medians min-max")
    for name, row in rows.items():
        print(
            f"{name:26} {row['train_flops_per_token'] / 1e6:15.1f} {row['step_ms_median']:8.1f}"
            f"  {row['step_ms_min']:.1f}-{row['step_ms_max']:.1f}"
        )
    flops_ratio = rows[new]["train_flops_per_token"] / rows[old]["train_flops_per_token"]
    print(
        f"new/old step time: {statistics.median(ratios):.3f} "
        f"(per-repeat {min(ratios):.3f}-{max(ratios):.3f}); FLOPs ratio {flops_ratio:.3f}"
    )
    figures = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": fingerprint(),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "steps": rounds * args.chunk,
        "chunk": args.chunk,
        "warmup": args.warmup,
        "blocks": rows,
        "ratio_new_over_old": statistics.median(ratios),
        "ratio_new_over_old_per_repeat": ratios,
        "flops_ratio_new_over_old": flops_ratio,
    }
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
