"""Step time on equal terms: how much the load beside a trial biases its step time.

Two real worker actors (Ray, one core each, pinned to disjoint cores) time the same block in
three conditions, interleaved over several repeats:

- alone: the other slot is idle;
- beside a trial: the other slot trains another block at the same time;
- beside the baseline: the other slot trains the job's baseline at the same time;
- sharing its core: a third actor, started when no core was free (so the allocator made it
  share the least contended core, as jobs that ask for fewer CPUs than trials do), trains
  another block on the same core at the same time. Before per-node allocation, two pools of
  different widths on one node could overlap like this without knowing it.

The baseline is also timed alone, as the runner did before the same-slot reference (it
trained first and alone). "Before" is what the constrained mode compared: the block's raw
step time, measured under whatever load, over the baseline's measured alone. "After" is the
`step_time_ratio` each trial now stores: its step time over the baseline timed on the same
slot, right before and after training, under the same load. Bias = the condition's figure
over the same figure measured alone (1.00 = none).

    python bench/step_time_bias.py --json bench/out/step_time_bias.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import ray
from figures import write_json
from proxy_throughput import DEFAULT_DATA

from search_space import PRESETS, ArchSpec, baseline
from workers.actor import worker_actor


def block_under_test(space: Any) -> ArchSpec:
    """A searched-looking block: the switch baseline with a wider model dim."""
    spec = baseline("switch", space)
    return spec.model_copy(update={"block": spec.block.model_copy(update={"d_model": 160})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=f"text:{DEFAULT_DATA}")
    parser.add_argument("--budget", type=float, default=5.0, help="training seconds per trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    space = PRESETS["proxy-cpu"]
    reference = baseline("glam", space)
    block = block_under_test(space)
    neighbour = baseline("dense", space)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    slots = [worker_actor(slot=i, cpus_per_slot=1) for i in range(2)]
    ray.get([actor.info.remote() for actor in slots])
    slots.append(worker_actor(slot=2, cpus_per_slot=0))  # waits, then shares a core
    infos = [ray.get(actor.info.remote()) for actor in slots]
    cores = [info["cores"] for info in infos]
    print(f"slot cores: {cores}, shared: {[info['cores_shared'] for info in infos]}")
    assert infos[2]["cores_shared"] and cores[2] == cores[0], "slot 2 must share slot 0's core"
    counter = iter(range(1, 1_000_000))

    def request(spec: ArchSpec) -> dict[str, Any]:
        return {
            "candidate_id": next(counter),
            "attempt": 1,
            "spec": spec.model_dump(mode="json"),
            "budget": {"seconds": args.budget},
            "data": args.data,
            "config": {"warmup_steps": 5},
            "reference": reference.model_dump(mode="json"),
        }

    def run(spec: ArchSpec, beside: ArchSpec | None, neighbour_slot: int = 1) -> dict[str, Any]:
        refs = [slots[0].run.remote(request(spec))]
        if beside is not None:
            refs.append(slots[neighbour_slot].run.remote(request(beside)))
        result = ray.get(refs)[0]["result"]
        assert result["status"] == "ok", result["reason"]
        return result

    run(block, neighbour)  # compile every program on every slot first
    run(neighbour, block)
    run(reference, None)
    ray.get([slots[i].run.remote(request(reference)) for i in (1, 2)])
    ray.get(slots[2].run.remote(request(neighbour)))
    conditions = {
        "alone": (None, 1),
        "beside a trial": (neighbour, 1),
        "beside the baseline": (reference, 1),
        "sharing its core": (neighbour, 2),
    }
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in conditions}
    baseline_alone: list[float] = []
    for repeat in range(args.repeats):
        baseline_alone.append(run(reference, None)["step_time_ms"])
        for name, (beside, neighbour_slot) in conditions.items():
            result = run(block, beside, neighbour_slot)
            measured[name].append(
                {"step_ms": result["step_time_ms"], "ratio": result["step_time_ratio"]}
            )
            print(
                f"repeat {repeat + 1}: {name:<20} step {result['step_time_ms']:7.1f} ms, "
                f"reference {result['reference_step_time_ms']:7.1f} ms, "
                f"ratio {result['step_time_ratio']:.3f}"
            )
    ray.shutdown()

    reference_alone = statistics.median(baseline_alone)
    alone_ms = statistics.median(m["step_ms"] for m in measured["alone"])
    alone_ratio = statistics.median(m["ratio"] for m in measured["alone"])
    rows = {}
    print(
        f"\nbaseline (glam) alone: {reference_alone:.1f} ms (median of {args.repeats}); "
        f"block: switch at d=160\n"
    )
    print(f"{'condition':<20} {'step ms':>18} {'before (raw/alone)':>19} {'after (ratio)':>16}")
    for name, samples in measured.items():
        steps = [m["step_ms"] for m in samples]
        ratios = [m["ratio"] for m in samples]
        before = [s / reference_alone for s in steps]
        rows[name] = {
            "step_ms": steps,
            "ratio_before": before,
            "ratio_after": ratios,
            "bias_before": statistics.median(steps) / alone_ms,
            "bias_after": statistics.median(ratios) / alone_ratio,
        }
        print(
            f"{name:<20} {statistics.median(steps):7.1f} [{min(steps):.0f}-{max(steps):.0f}]"
            f" {statistics.median(before):12.3f} ({rows[name]['bias_before']:.3f}x)"
            f" {statistics.median(ratios):8.3f} ({rows[name]['bias_after']:.3f}x)"
        )
    write_json(
        args.json,
        {
            "budget_s": args.budget,
            "repeats": args.repeats,
            "slot_cores": cores,
            "baseline_alone_ms": baseline_alone,
            "conditions": rows,
        },
    )


if __name__ == "__main__":
    main()
