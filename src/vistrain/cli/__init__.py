"""The `vistrain` command: one module per group of commands, registered on `main`."""

from vistrain.cli import audit_commands, data_commands, model_commands, train_commands  # noqa: F401  (register)
from vistrain.cli.main import main

__all__ = ["main"]
