"""The ``dimask`` command line."""

from dimaskdino.cli.app import app, main

__all__ = ["app", "main"]
