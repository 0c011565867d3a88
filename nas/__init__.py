"""nas: hardware-aware architecture search for small decoder-only language models.

The package is built in layers; a module imports only from layers below its own (checked in CI by
import-linter, see pyproject.toml):

    nas.cli, nas.commands                         the `nas` command
    nas.search, nas.proxy, nas.report, nas.export the jobs
    nas.study                                     stored trial/study schema, objectives, Pareto, storage
    nas.latency                                   graphs, measurement, predictors, analytic model, bundle
    nas.targets, nas.spaces, nas.model            devices, search spaces, the reference torch model
    nas.core                                      ArchConfig and accounting, errors, user files, paths
"""

from nas.core.arch import ArchConfig
from nas.core.errors import ArchConfigError, NasUserError
from nas.core.version import __version__

__all__ = ["ArchConfig", "ArchConfigError", "NasUserError", "__version__"]
