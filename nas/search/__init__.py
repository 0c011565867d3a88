"""`nas search`: shapes for a device, in stages.

1. The latency stage (`nas.search.latency_stage`): every candidate's predicted speed, memory and parameter count; an
   Optuna sampler plus, for enumerable spaces, the exact front.
2. The proxy stage (`nas.search.proxy_stage`): shapes chosen on and near that front (`nas.search.selection`) are
   trained as short proxies in rungs of growing budget, stopped early by multi-objective successive halving;
   the final front is proxy quality against device speed.
`nas.search.pipeline.Search` runs them, for one process among any number sharing a storage.
"""

from nas.search.latency_stage import (
                                DEFAULT_CONTEXT_LEN,
                                DEFAULT_PROMPT_LEN,
                                DEFAULT_SEED,
                                DEFAULT_SPACE,
                                DEFAULT_TRIALS,
                                MAX_ASKS_PER_TRIAL,
                                MAX_SEED,
                                SAMPLERS,
                                ExactFront,
                                LatencyStage,
                                SearchResult,
                                SearchSettings,
)
from nas.search.output import format_table, pareto_row, pick_rows
from nas.search.pipeline import STAGES, ProxySummary, Search, StageLock
from nas.search.proxy_stage import ProxyOptions
from nas.study.schema import proxy_study_name

__all__ = ["DEFAULT_CONTEXT_LEN", "DEFAULT_PROMPT_LEN", "DEFAULT_SEED", "DEFAULT_SPACE", "DEFAULT_TRIALS",
           "MAX_ASKS_PER_TRIAL", "MAX_SEED", "SAMPLERS", "STAGES", "ExactFront", "LatencyStage", "ProxyOptions",
           "ProxySummary", "Search", "SearchResult", "SearchSettings", "StageLock", "format_table", "pareto_row",
           "pick_rows", "proxy_study_name"]
