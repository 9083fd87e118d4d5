"""Scheduler: owns each job's Optuna study and dispatches candidates to Ray."""

from service.scheduler.controller import JobController
from service.scheduler.loop import run_scheduler

__all__ = ["JobController", "run_scheduler"]
