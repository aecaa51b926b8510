"""The ``backprop`` command: the operators' commands (``main``), ``backprop dev``'s supervisor
(``dev``), the database schema's upgrade (``schema``), and the users' commands, which talk to
the API over HTTP with ``backprop.client`` (``jobs``, ``datasets``, ``sweeps``).
The reason to change is a group of commands added, or moved between modules."""
