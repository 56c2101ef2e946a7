"""Scheduler: groups buffers into kernels (kernels.py)."""
from .kernels import Kernel, KernelNode, Schedule, schedule

__all__ = ["Kernel", "KernelNode", "Schedule", "schedule"]
