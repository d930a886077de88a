"""`OptionError`: a setting that cannot be used, named as the API names it (a `TrainOptions` field, a keyword
argument); the command line shows the same message with its flags (`vistrain.cli.main.flag_of`)."""

from __future__ import annotations

import re
from typing import Callable

PART = re.compile(r"\{\{|\}\}|\{(\w+)\}")


class OptionError(ValueError):
    """A bad setting. `template` names options as {name} (and writes other braces doubled: `quoted`); `str(error)`
    shows them as names (`fine_tune`), `error.spelled(flag_of)` as the caller spells them (`--fine-tune`)."""

    def __init__(self, template: str):
        self.template = template
        self.options = tuple(name for name in PART.findall(template) if name)
        super().__init__(self.spelled(str))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each option name given by `spell(name)`."""
        return PART.sub(lambda match: spell(match.group(1)) if match.group(1) else match.group()[0], self.template)


def quoted(value: object) -> str:
    """A value (a path, what the user typed) for a template: its braces doubled, so that none reads as a name."""
    return str(value).replace("{", "{{").replace("}", "}}")
