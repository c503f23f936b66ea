"""Host calls Stockade owns: metered WASI functions, budgets, deadlines and quotas."""

from __future__ import annotations

from .abi import INTERPOSED, MODULE, PREVIEW1_FUNCTIONS
from .interpose import LINKER_NAME, build_linker, metered
from .meter import Meter

__all__ = ["INTERPOSED", "MODULE", "PREVIEW1_FUNCTIONS", "LINKER_NAME", "build_linker",
           "metered", "Meter"]
