"""The training loop with steps dispatched ahead against one step at a time, on this machine.

`steps_ahead: 0` is the former loop (dispatch a step, wait for its loss, time it from
dispatch to completion); the default 2 keeps two more steps in flight while the host reads
one. For each, the dense and GLaM proxy-cpu baselines train for a seconds budget several
times, alternating the two loops: the stored step time (median of steady steps) and the
budget's overshoot (train_s - budget), as medians with their range over the repeats.

    python bench/async_loop.py --json bench/out/async_loop.json
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from figures import write_json

from search_space import baseline
from workers.data import load_dataset
from workers.device import fingerprint
from workers.trainer import TrainConfig, train_proxy

LOOPS = {"one at a time (before)": 0, "2 steps ahead (after)": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of steps per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default="builtin:stdlib")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, as a worker slot has
        os.sched_setaffinity(0, [min(os.sched_getaffinity(0))])

    data = load_dataset(args.data)
    programs: dict = {}
    figures: dict = {"device": fingerprint(), "budget_s": args.budget, "blocks": {}}
    for name in ("dense", "glam"):
        spec = baseline(name)
        runs: dict[str, list] = {loop: [] for loop in LOOPS}
        for _ in range(args.repeats):
            for loop, ahead in LOOPS.items():
                config = replace(TrainConfig(), steps_ahead=ahead)
                result = train_proxy(spec, args.budget, data, config=config, programs=programs)
                runs[loop].append((result.step_time_ms, result.train_s - args.budget))
        block = {}
        for loop, values in runs.items():
            step, over = np.array(values).T
            block[loop] = {
                "step_ms": {"median": float(np.median(step)), "min": step.min(), "max": step.max()},
                "overshoot_s": {
                    "median": float(np.median(over)),
                    "min": over.min(),
                    "max": over.max(),
                },
            }
        before, after = (block[loop]["step_ms"]["median"] for loop in LOOPS)
        block["step_ratio_after_before"] = after / before
        figures["blocks"][name] = block
        print(f"{name}: {args.repeats} runs of {args.budget:g} s per loop")
        for loop in LOOPS:
            s, o = block[loop]["step_ms"], block[loop]["overshoot_s"]
            print(
                f"  {loop:>24}: step {s['median']:7.1f} ms [{s['min']:.1f}, {s['max']:.1f}]"
                f"  overshoot {o['median']:+.3f} s [{o['min']:+.3f}, {o['max']:+.3f}]"
            )
        print(f"  step time after / before: {block['step_ratio_after_before']:.3f}")
    write_json(args.json, _floats(figures))


def _floats(value):
    if isinstance(value, dict):
        return {key: _floats(item) for key, item in value.items()}
    return float(value) if isinstance(value, np.floating) else value


if __name__ == "__main__":
    main()
