"""Hyperparameter search, without SQL: ``space`` (the fields a sweep searches and their
dimensions), ``sampling`` (each trial's values, seed and spec) and ``asha`` (the rung
decisions). The sweep's rows (``store.sweeps``) are the state. The reason to change is how the
search is split into these modules."""
