"""What the trainer measures about the machine: device fingerprint, matmul peak, JAX setup."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

DEFAULT_CACHE_DIR = Path(os.environ.get("NAS_JAX_CACHE_DIR", "~/.cache/nas-service/jax"))


def enable_compilation_cache(cache_dir: str | Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (every program, however fast to compile).

    It pays off when the same program repeats (a spec retried, a baseline per job);
    a new architecture still compiles from scratch.
    """
    path = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def _host_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_precision() -> str:
    """bfloat16 on GPUs and TPUs (their matrix units' native input), float32 on CPUs (where
    XLA emulates bfloat16 matmuls, slower than float32)."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


@functools.cache
def fingerprint() -> dict[str, str | int]:
    """Step times are only comparable between trials with equal fingerprints."""
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "host_cpu": _host_cpu(),
        "host_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }


@functools.cache
def matmul_peak_flops(n: int | None = None, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matmul FLOP/s of the default device in `dtype` (float32 or bfloat16): the
    MFU denominator of a trial in that precision. n: 1024 on a CPU (0.5 s on one core, within
    a few percent of larger sizes there), 4096 on an accelerator."""
    n = n or (1024 if jax.default_backend() == "cpu" else 4096)
    a = jnp.ones((n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / sorted(times)[len(times) // 2]
