"""The package version, in one place (nas/__init__.py re-exports it; pyproject.toml repeats it)."""

__version__ = "0.1.0"
