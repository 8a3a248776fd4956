"""Quaymaster: a container image registry compatible with Red Hat Quay."""

__version__ = "0.1.0"
