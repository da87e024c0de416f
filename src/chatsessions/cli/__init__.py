"""The ``chatsessions`` command line: one module per command group."""

from chatsessions.cli.app import app, main

__all__ = ["app", "main"]
