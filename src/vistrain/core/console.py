"""Two consoles: `console` (stderr) for progress and messages, `results` (stdout) for tables to read or pipe."""

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)  # long paths stay on one line
results = Console(highlight=False, soft_wrap=True)
