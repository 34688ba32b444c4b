"""What makes two measurements comparable: the device kind a result was measured on.

Step times are compared only as ratios to the baseline timed on the same slot; perplexities
under a wall-clock budget depend on how many steps the device managed, so a job's winner is
chosen among results of its own device kind.
"""

from __future__ import annotations

from typing import Any


def device_kind(device: dict[str, Any] | None) -> str | None:
    """`platform:kind` of a device fingerprint (CPUs: the host's processor model)."""
    if not device or not device.get("platform"):
        return None
    kind = device.get("device_kind") or ""
    if device["platform"] == "cpu":
        kind = device.get("host_cpu") or kind
    return f"{device['platform']}:{kind}"[:200]
