"""Two consoles: `console` (stderr) for progress and messages, `results` (stdout) for tables to read or pipe."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
results = Console(highlight=False)
