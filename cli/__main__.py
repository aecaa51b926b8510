"""``python -m cli``: the ``backprop`` command without its console script."""

from cli.main import main

main()
