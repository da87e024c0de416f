"""``python -m chatsessions`` is the ``chatsessions`` command."""

from chatsessions.cli import main

main()
