"""latency_models package."""
