"""What a study means: the schema of what a search stores in Optuna user attrs (`schema`), objectives and
constraints (`objectives`), Pareto sets and hypervolume (`pareto`), opening storages (`storage`) and reading a
stored study back (`read`). The jobs above (search, report, export, proxy) all go through this layer."""
