"""The package version, importable without pulling in the rest of pruneofa."""

__version__ = "0.1.0"
