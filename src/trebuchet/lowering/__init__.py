"""Lowering: ATen FX graph -> IR (one rule per op, see registry.py)."""
from .graph import OpCounts, lower_graph
from .registry import LOWERINGS, LoweringError

__all__ = ["LOWERINGS", "LoweringError", "OpCounts", "lower_graph"]
