"""Two consoles: `console` (stderr) for progress and messages, `results` (stdout) for tables to read or pipe.

Names from the user's files reach the terminal through `printable`, the one escaping function: a control character
(ESC, BEL, a C1 CSI, a bidirectional override) is shown as an escape such as \\x1b, never sent to the terminal, and
each byte of a file name that is not UTF-8 is shown as \\xNN. `shown` also escapes rich markup, for names put into
markup (`[red]x[/].png` is a file name, not a style). Both consoles apply `printable` to everything they render, so
a name printed without `shown` is still harmless; error messages get it in `vistrain.cli.main`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.segment import Segment

# C0 controls, DEL, C1 controls, bidirectional marks and overrides, and the lone surrogates Python gives the bytes
# of an undecodable file name (os.fsdecode's surrogateescape).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]")
LAYOUT = "\t\n"  # control characters that messages and tables use as they are


def printable(text: str, keep: str = LAYOUT) -> str:
    """`text` with every control character but those in `keep` shown as an escape (\\x1b, \\u202e) and every
    undecodable byte of a file name as \\xNN."""
    return CONTROL.sub(lambda match: match.group() if match.group() in keep else _escaped(match.group()), text)


def _escaped(character: str) -> str:
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """A name or message from the user's files as rich markup that prints it as it is: control characters
    escaped (`printable`), markup escaped."""
    return escape(printable(str(value)))


class _PrintableConsole(Console):
    """A rich Console that renders no control character from text (its own styles and cursor moves are added
    after rendering, or are control segments)."""

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not CONTROL.search(segment.text):
                yield segment
            else:
                yield Segment(printable(segment.text), segment.style)


console = _PrintableConsole(stderr=True, highlight=False, soft_wrap=True)  # long paths stay on one line
results = _PrintableConsole(highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(label: str, total: int, show: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar of `total` items on `console`, gone once done, drawn only when `show` (the library is quiet:
    its commands show it); yields `advance(n)`, to call as n more items are done."""
    columns = [TextColumn(shown(label)), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not show, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
