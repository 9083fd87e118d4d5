"""TVM latency probes (TVM is imported lazily: ~3 s)."""

from workers.probe._stats import summarize
from workers.probe.tvm_probe import ProbeError, probe_latency, resolve_target

__all__ = ["ProbeError", "probe_latency", "resolve_target", "summarize"]
