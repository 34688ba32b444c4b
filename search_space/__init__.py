"""The search space: what a candidate block is, how to sample, mutate, cost and scale it.

Pure Python and numpy: no JAX, no I/O. Everything else in the project builds on it.
"""

from search_space.baselines import BASELINES, baseline
from search_space.cost import CostReport, LayerCost, cost
from search_space.features import FEATURES, block_features, spec_features
from search_space.operators import mutate, sample
from search_space.scaling import ScaleResult, scale
from search_space.space import PRESETS, SearchSpace, SpaceViolation, get_preset
from search_space.specs import (
    SCHEMA_VERSION,
    ArchSpec,
    AttentionSpec,
    BlockSpec,
    FFNSpec,
    MoESpec,
    describe,
    spec_hash,
)

__all__ = [
    "BASELINES",
    "FEATURES",
    "PRESETS",
    "SCHEMA_VERSION",
    "ArchSpec",
    "AttentionSpec",
    "BlockSpec",
    "CostReport",
    "FFNSpec",
    "LayerCost",
    "MoESpec",
    "ScaleResult",
    "SearchSpace",
    "SpaceViolation",
    "baseline",
    "block_features",
    "cost",
    "describe",
    "get_preset",
    "mutate",
    "sample",
    "scale",
    "spec_features",
    "spec_hash",
]
