"""API schemas."""

from service.schemas.jobs import (
    Budget,
    JobCreate,
    JobPublic,
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
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "ParetoPoint",
    "ParetoPublic",
    "Progress",
    "Training",
    "TrialPublic",
    "TrialsPublic",
]
