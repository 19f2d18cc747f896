"""The package version, in one place (the ground layer: importing it pulls in nothing)."""

__version__ = "0.1.0"
