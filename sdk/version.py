"""The package version: the one place it is written (``setup.py`` and the exporter read it here)."""

__version__ = "0.1.0"
