"""Errors raised for user mistakes.

Every user-facing error names the field (or file and row) at fault and the fix, in one
line. The CLI prints ``str(err)`` without a stack trace; library users catch
:class:`FleetOptError`.
"""

from __future__ import annotations


class FleetOptError(ValueError):
    """A user mistake or an unanswerable question; the message names the field and the fix."""


class WorkloadError(FleetOptError):
    """A workload file or name that cannot be read (names the file, the row and the problem)."""


class CatalogError(FleetOptError):
    """An unknown or malformed GPU, model or profile entry in the catalogue."""


class InfeasibleError(FleetOptError):
    """No fleet meets the constraints; ``binding`` names the constraint that makes it so."""

    def __init__(self, message: str, binding: str):
        super().__init__(message)
        self.binding = binding
