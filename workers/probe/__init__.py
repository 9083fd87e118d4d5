"""TVM latency probes (TVM is imported lazily: ~3 s)."""

from workers.probe._stats import summarize
from workers.probe.core import ProbeOptions, probe
from workers.probe.errors import ProbeBusyError, ProbeError, ProbeTransientError
from workers.probe.targets import resolve_target

__all__ = [
    "ProbeBusyError",
    "ProbeError",
    "ProbeOptions",
    "ProbeTransientError",
    "probe",
    "resolve_target",
    "summarize",
]
