"""API schemas."""

from service.schemas.jobs import (
    Budget,
    Extend,
    Fidelity,
    JobCreate,
    JobPublic,
    JobReport,
    JobsPublic,
    ParetoPoint,
    ParetoPublic,
    Progress,
    Training,
    TrialPublic,
    TrialsPublic,
)

__all__ = [
    "Budget",
    "Extend",
    "Fidelity",
    "JobCreate",
    "JobReport",
    "JobPublic",
    "JobsPublic",
    "ParetoPoint",
    "ParetoPublic",
    "Progress",
    "Training",
    "TrialPublic",
    "TrialsPublic",
]
