"""The package version, in one place (read by ``flowinfer.__version__`` and checkpoints)."""

__version__ = "0.1.0"
