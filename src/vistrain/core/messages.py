"""What the library has to say while it works: lines for `logging` (the `vistrain` logger), never printed by the
library itself. The API stays quiet (`vistrain/__init__.py` gives the logger a NullHandler) unless the user's own
logging shows them; the command line shows them on stderr (`vistrain.cli.show.MessageLines`). Messages are plain
text: a file name in one is shown as it is, never read as markup."""

from __future__ import annotations

import logging

LOG = logging.getLogger("vistrain")


def say(message: str) -> None:
    """A line of progress or information (logging.INFO)."""
    LOG.info(message)


def warn(message: str) -> None:
    """A line about something the user should look at (logging.WARNING); it starts `warning:` where it is one."""
    LOG.warning(message)


def quiet(message: str) -> None:
    """Says nothing: the other processes under torchrun leave their lines to rank 0."""
