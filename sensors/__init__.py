"""Sensors of the code location. Imported only by ``petrosa_pipelines.definitions``."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """Every sensor this package defines."""
    return dg.Definitions(sensors=[])


__all__ = ["defs"]
