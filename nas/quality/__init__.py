"""Model quality at the scale users pretrain: a law fitted to published training runs predicts the loss a shape
reaches after D tokens (`nas.quality.model.QualityModel`), with its leave-one-study-out band.

- `runs`: the published runs (quality_models/published_runs.{toml,csv}), read and checked.
- `law`: the law's forms, features and robust fit.
- `validate`: leave-one-study-out pairs, scores and the band; bootstrap refits.
- `model`: choosing and fitting the shipped law (`nas quality fit`) and reading it back for predictions.
"""
