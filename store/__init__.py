"""The SQL store, one module per table family. The reason to change is a family added or split."""
