"""nas: hardware-aware architecture search for small decoder-only language models."""

from nas.arch import ArchConfig
from nas.errors import ArchConfigError, NasUserError

__version__ = "0.1.0"
__all__ = ["ArchConfig", "ArchConfigError", "NasUserError", "__version__"]
