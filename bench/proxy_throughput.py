"""Proxy training throughput: step time, tokens/s and MFU of the baselines, compile times.

In one run: the machine's float32 matmul peak, then for the dense, GLaM, Switch and GLaM
expert-choice baselines at the proxy-cpu size and the dense baseline at model dim 512:
compile seconds on a cold and a warm persistent cache, steady-state step ms, tokens/s and
MFU against that peak. Each MoE block is also compared with a dense block of the same
activated FLOPs (every MoE layer replaced by an FFN as wide as what its experts compute,
capacity included).

    python bench/proxy_throughput.py --json bench/out/proxy_throughput.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
from figures import write_json
from flax import nnx

from search_space import PRESETS, ArchSpec, baseline, cost
from search_space.cost import flop_matched_dense
from workers.data import load_dataset
from workers.device import enable_compilation_cache, fingerprint, matmul_peak_flops
from workers.model import build_model
from workers.trainer import TrainConfig, compile_program, train_proxy

# The whole tinyshakespeare where ../shared holds it (bench/RESULTS.md was measured on it);
# else the project's 300 KB excerpt of it, so a fresh clone runs every benchmark.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
PROJECT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "tinyshakespeare_head.txt"
DEFAULT_DATA = SHARED_DATA if SHARED_DATA.is_file() else PROJECT_DATA


def compile_times(spec: ArchSpec, config: TrainConfig) -> tuple[float, float]:
    """Compile on a cold persistent cache, then again from that cache (memory caches cleared)."""
    graphdef, params = nnx.split(build_model(spec))
    shape = (config.batch_size, spec.seq_len + 1)
    jax.clear_caches()
    cold = compile_program(graphdef, config, params, shape).compile_s
    jax.clear_caches()
    warm = compile_program(graphdef, config, params, shape).compile_s
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=f"text:{DEFAULT_DATA}")
    parser.add_argument("--budget", type=float, default=6.0, help="training seconds per block")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    cache_dir = tempfile.mkdtemp(prefix="nas-bench-jax-cache-")
    enable_compilation_cache(cache_dir)
    dataset = load_dataset(args.data)
    config = TrainConfig(batch_size=args.batch_size)
    peak = max(matmul_peak_flops(n) for n in (1024, 2048, 3072))
    proxy = PRESETS["proxy-cpu"]
    wide = proxy.override(
        {"d_model": [512], "attention_heads": [16], "ffn_hidden": [2048], "moe_hidden": [2048]}
    )
    blocks = {name: baseline(name, proxy) for name in ("dense", "glam", "switch", "glam-ec")}
    blocks["dense-d512"] = baseline("dense", wide)
    for name in ("glam", "switch", "glam-ec"):
        blocks[f"{name}-equal-flops-dense"] = flop_matched_dense(blocks[name])

    rows = {}
    for name, spec in blocks.items():
        cold, warm = compile_times(spec, config)
        result = train_proxy(spec, args.budget, dataset, config=config, cache_dir=cache_dir)
        report = cost(spec)
        tokens_per_s = result.tokens_per_s or 0.0
        rows[name] = {
            "status": result.status,
            "params_activated": report.params_activated,
            "train_flops_per_token": report.train_flops_per_token,
            "compile_cold_s": cold,
            "compile_warm_s": warm,
            "step_ms": result.step_time_ms,
            "step_p90_ms": result.step_time_p90_ms,
            "tokens_per_s": tokens_per_s,
            "mfu": report.train_flops_per_token * tokens_per_s / peak,
            "steps": result.steps,
            "val_loss": result.val_loss,
        }
    for name in ("glam", "switch", "glam-ec"):
        rows[name]["step_ratio_vs_equal_flops_dense"] = (
            rows[name]["step_ms"] / rows[f"{name}-equal-flops-dense"]["step_ms"]
        )

    print(f"matmul peak (fp32): {peak / 1e9:.1f} GFLOP/s on {fingerprint()['host_cpu']}")
    print(f"{'block':28}  cold s  warm s  step ms    tok/s    MFU  vs eqF")
    for name, row in rows.items():
        ratio = row.get("step_ratio_vs_equal_flops_dense")
        print(
            f"{name:28} {row['compile_cold_s']:7.2f} {row['compile_warm_s']:7.2f} "
            f"{row['step_ms']:8.1f} {row['tokens_per_s']:8.0f} {row['mfu']:6.1%} "
            f"{'' if ratio is None else f'{ratio:6.2f}x':>7}"
        )
    figures = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": fingerprint(),
        "matmul_peak_flops": peak,
        "batch_size": args.batch_size,
        "budget_s": args.budget,
        "blocks": rows,
    }
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
