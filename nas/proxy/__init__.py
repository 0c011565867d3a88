"""Proxy training: how well a candidate's shape learns, measured on a scaled-down proxy trained for a short,
fixed token budget on real text.

- `corpus`: the text (shipped or the user's), bytes as tokens, a deterministic held-out split;
- `scaling`: candidate -> proxy (the scaling rule) and the muP + CompleteP parametrisation;
- `train`: the training loop with rung budgets and a cool-down per rung, scored in held-out bits per byte;
- `halving`: multi-objective successive halving (which runs continue to the next rung).
"""
