"""`nas search`: shapes for a device, in stages.

1. The latency stage (`nas.search.latency_stage`): every candidate's predicted loss, speed and memory; an Optuna
   sampler plus, for enumerable spaces, the exact front.
2. The proxy stage (`nas.search.proxy_stage`): shapes chosen on and near that front (`nas.search.selection`) are
   trained as short proxies in rungs of growing budget, stopped early by multi-objective successive halving:
   the check of the quality law on the user's text.
`nas.search.pipeline.Search` runs them, for one process among any number sharing a storage. The settings and
their defaults (`nas.search.settings`) import nothing heavy, so the CLI builds its parser from them.

Names are imported lazily, as in `nas.latency`: importing `nas.search.settings` stays cheap.
"""

from __future__ import annotations

from nas.core.lazy import lazy_exports

_EXPORTS = {
    "SearchSettings": "settings", "SAMPLERS": "settings", "STAGES": "settings", "DEFAULT_SPACE": "settings",
    "DEFAULT_TRIALS": "settings", "DEFAULT_PROMPT_LEN": "settings", "DEFAULT_CONTEXT_LEN": "settings",
    "DEFAULT_SEED": "settings", "MAX_SEED": "settings",
    "LatencyStage": "latency_stage", "SearchResult": "latency_stage", "ExactFront": "exact",
    "MAX_ASKS_PER_TRIAL": "sampling",
    "ProxyOptions": "proxy_stage",
    "Search": "pipeline", "ProxySummary": "pipeline", "StageLock": "pipeline",
    "format_table": "output", "pareto_row": "output", "pick_rows": "output",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
