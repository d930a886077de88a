"""The `vistrain` command: one module per group of commands, registered on `main`."""

from vistrain.cli import data_commands, model_commands, train_commands  # noqa: F401  (register the commands)
from vistrain.cli.main import main

__all__ = ["main"]
