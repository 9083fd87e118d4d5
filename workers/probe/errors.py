"""Probe errors: a candidate's fault (:class:`ProbeError`) or the device's (transient)."""

from __future__ import annotations

from search_spaces import HwnasError


class ProbeError(HwnasError, RuntimeError):
    """Lowering, compiling or running a candidate with TVM failed."""


class ProbeTransientError(ProbeError):
    """The device or the connection to it failed (RPC server gone, session timed out) after
    bounded retries: not the candidate's fault; the message carries the last error."""


class ProbeBusyError(ProbeTransientError):
    """No device under the profile's key became free before the deadline."""


class TuningUnavailableError(HwnasError, RuntimeError):
    """Tuning was asked for but its cost model can't be built: a deployment error that fails
    the job, never a silent switch to random search."""
