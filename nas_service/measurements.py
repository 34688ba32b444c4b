"""What makes two measurements comparable: the device kind a result was measured on.

Step times are compared only as ratios to the baseline timed on the same slot; perplexities
under a wall-clock budget depend on how many steps the device managed, so a job's winner is
chosen among results of its own device kind.
"""

from __future__ import annotations

from typing import Any


def device_kind(device: dict[str, Any] | None) -> str | None:
    """`platform:kind` of a device fingerprint (CPUs: the host's processor model), with the
    share of a GPU the trial held when it shared one (`gpu:NVIDIA H200 @0.25`): a quarter of
    a GPU trains fewer steps in a wall-clock budget than a whole one."""
    if not device or not device.get("platform"):
        return None
    kind = device.get("device_kind") or ""
    if device["platform"] == "cpu":
        kind = device.get("host_cpu") or kind
    share = f" @{device['gpu_share']:g}" if device.get("gpu_share") else ""
    return f"{device['platform']}:{kind}"[: 200 - len(share)] + share
