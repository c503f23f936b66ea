"""`stockade advise`: the seed's technology-selection tree as advice grounded in numbers.

    needs (flags, questions, a module's imports) ──► rules (one data table) ──► Advice
                                        figures (published, or this machine's bench) ──┘
"""

from __future__ import annotations

from .advice import Advice, Reason, advise
from .figures import Figure, Figures, from_results, load_results, published, results_source
from .needs import CHOICES, LANGUAGE_SUPPORT, ModuleFacts, Needs, needs_from_module
from .rules import RULES, Rule

__all__ = ["Advice", "Reason", "advise", "Figure", "Figures", "from_results", "load_results",
           "published", "results_source", "CHOICES", "LANGUAGE_SUPPORT", "ModuleFacts", "Needs",
           "needs_from_module", "RULES", "Rule"]
