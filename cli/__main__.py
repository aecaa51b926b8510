"""``python -m cli``: the ``backprop`` command without its console script.
The reason to change is how the module starts the command."""

from cli.main import main

main()
