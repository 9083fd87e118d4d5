"""The Optuna dashboard behind the service's accounts (served by the API process)."""

from service.dashboard.gate import COOKIE, LOGIN, PATHS, DashboardGate
from service.dashboard.view import AccountStudies, ReadOnlyError, Viewer

__all__ = ["COOKIE", "LOGIN", "PATHS", "AccountStudies", "DashboardGate", "ReadOnlyError", "Viewer"]
