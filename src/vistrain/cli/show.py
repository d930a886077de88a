"""What the commands print: metrics, ranked images, predictions and skipped files, as rich tables.

Names that come from the user's files (file and class names, reasons that quote them) go through `shown`: rich
would read `[red]x[/].png` as markup (and `[/].png` would stop the command with a MarkupError), and a control
character in a name would reach the terminal.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import click
from rich.table import Table

from vistrain.core.console import console, printable, results, shown
from vistrain.core.device import halved_message
from vistrain.core.messages import LOG


class MessageLines(logging.Handler):
    """The library's messages (`vistrain.core.messages`) as lines on stderr, as plain text (a file name is never
    read as markup): a leading `warning:` in yellow, other warnings all in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("warning:"):
            console.print(f"[yellow]warning:[/]{shown(message.removeprefix('warning:'))}")
        elif record.levelno >= logging.WARNING:
            console.print(f"[yellow]{shown(message)}[/]")
        else:
            console.print(shown(message))


@contextmanager
def messages_shown() -> Iterator[None]:
    """The library's messages shown on stderr while a command runs (and no longer after it: the library is quiet
    again for a program that runs commands in-process)."""
    handler, level, propagate = MessageLines(), LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the user's own logging configuration does not show them twice
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)
        LOG.propagate = propagate


def say_halved(what: str):
    """An `on_halve` for `what` (e.g. "feature batches") that says so on the console."""
    return lambda size: console.print(f"[yellow]{shown(halved_message(what, size))}[/]")


def print_entries(title: str, entries: list, top: int) -> None:
    """A compact table of ranked images; says so when the list is shorter than asked."""
    note = "" if len(entries) >= top else f"  [dim](only {len(entries)} of {top})[/]"
    table = Table(title=f"{shown(title)}{note}", title_justify="left", show_edge=False)
    last = "error" if entries and entries[0].error is not None else "probability"
    for column, justify in (("#", "right"), ("file", "left"), ("true", "left"), ("predicted", "left"), (last, "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for rank, e in enumerate(entries, 1):
        table.add_row(str(rank), shown(e.file.name), shown(e.true), shown(e.predicted),
                      f"{e.error:.4g}" if last == "error" else f"{e.probability:.4f}")
    results.print(table)


def print_metrics(metrics: dict) -> None:
    """The task's metrics as terminal tables."""
    if "per_target" in metrics:
        r2 = "n/a" if metrics["r2"] is None else f"{metrics['r2']:.4f}"
        _print_table(f"MAE {metrics['mae']:.4g} · RMSE {metrics['rmse']:.4g} · R² {r2} "
                     f"on {metrics['n_images']} images",
                     ("target", "MAE", "RMSE", "R²"),
                     [(shown(name), f"{m['mae']:.4g}", f"{m['rmse']:.4g}",
                       "n/a" if m["r2"] is None else f"{m['r2']:.4f}")
                      for name, m in metrics["per_target"].items()])
        return
    if "per_label" in metrics:
        mean_ap = metrics["mean_average_precision"]
        _print_table(f"micro F1 {metrics['micro_f1']:.4f} · macro F1 {metrics['macro_f1']:.4f} · mAP "
                     f"{'n/a' if mean_ap is None else f'{mean_ap:.4f}'} · exact match {metrics['exact_match']:.4f} "
                     f"on {metrics['n_images']} images",
                     ("label", "threshold", "precision", "recall", "F1", "AP", "images"),
                     [(shown(name), f"{m['threshold']:.2f}", f"{m['precision']:.4f}", f"{m['recall']:.4f}",
                       f"{m['f1']:.4f}",
                       "n/a" if m["average_precision"] is None else f"{m['average_precision']:.4f}", str(m["support"]))
                      for name, m in metrics["per_label"].items()])
        return
    extra = "".join(f" · {'ROC AUC' if key == 'roc_auc' else key.replace('_', ' ')} {value:.4f}"
                    for key, value in metrics.items()
                    if key == "roc_auc" or (key.startswith("top_") and key.endswith("_accuracy")))
    _print_table(f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images  "
                 f"(macro F1 {metrics['macro_f1']:.4f}{extra})",
                 ("class", "precision", "recall", "F1", "images"),
                 [(shown(name), f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
                  for name, m in metrics["per_class"].items()])
    names = list(metrics["per_class"])
    matrix = Table(title="confusion matrix")
    matrix.add_column("true ↓  predicted →")
    for name in names:
        matrix.add_column(shown(name), justify="right")
    for name, row in zip(names, metrics["confusion_matrix"]):
        matrix.add_row(shown(name), *map(str, row))
    results.print(matrix)


def print_leaderboard(rows: list[dict]) -> None:
    """A budget's candidates (leaderboard.csv), the chosen one marked."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "changed"]
    table = Table(title="leaderboard (chosen on held-out training images; validation for the record)",
                  title_justify="left")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column in ("candidate", "note") else "right",
                         overflow="fold")
    for row in rows:
        style = "bold green" if row["chosen"] else None
        table.add_row(*(shown(row[c]) for c in columns), style=style)
    results.print(table)


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    results.print(table)


def print_predictions(rows: list[dict], output_format: str, k: int) -> None:
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", "class", "probability", "uncertain", "top", "error"])
        for row in rows:
            top = ";".join(f"{name}:{p:.4f}" for name, p in row["top"])
            probability = "" if row["probability"] is None else f"{row['probability']:.6f}"
            writer.writerow(["" if cell is None else printable(str(cell)) for cell in
                             (row["file"], row["class"], probability, row["uncertain"], top, row["error"])])
        return
    width = max(24, results.width - 50)  # room for the other columns; long paths keep their end (the file name)
    table = Table()
    table.add_column("file", no_wrap=True, max_width=width)
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column(f"top {k}")
    for row in rows:
        if row["error"]:
            table.add_row(shown(shorten_start(printable(row["file"]), width)), "[red]error[/]", "", shown(row["error"]))
            continue
        label = shown(row["class"]) + (" [yellow](uncertain)[/]" if row["uncertain"] else "")
        top = ", ".join(f"{shown(name)} {p:.3f}" for name, p in row["top"])
        probability = "" if row["probability"] is None else f"{row['probability']:.4f}"
        table.add_row(shown(shorten_start(printable(row["file"]), width)), label, probability, top)
    results.print(table)


def shorten_start(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut at the start ("…/cat/Cat1.jpg"), so a path keeps its file name."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def report_skipped(skipped: list) -> None:
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} file(s):[/]")
        for item in skipped:
            console.print(f"  {shown(str(item.path))}: {shown(item.reason)}")
