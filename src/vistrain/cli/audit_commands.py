"""`vistrain audit` and `vistrain review`: find mislabelled, off-topic and duplicated training images, then decide."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from vistrain.cli.main import CACHE_DIR, DATA, DECISIONS, PRECISION, data_source, friendly_errors, label_options, main
from vistrain.cli.show import report_skipped
from vistrain.core.console import console, results, shown
from vistrain.data.samples import TASKS
from vistrain.training.options import DEFAULTS


def audit_options(command):
    options = [
        DATA,
        label_options,
        click.option("--task", default=DEFAULTS.task, type=click.Choice(("auto", *TASKS))),
        click.option("--backbone", default=DEFAULTS.backbone, help="Whose features to audit with."),
        click.option("--folds", default=5, type=click.IntRange(2), help="Cross-validation folds."),
        click.option("--seed", default=DEFAULTS.seed, type=int),
        click.option("--label-depth", default=DEFAULTS.label_depth, type=click.IntRange(1)),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="vistrain-audit",
                     help="Folder for audit.csv, predictions.csv (out-of-sample) and audit.html."),
        DECISIONS,
        click.option("--top", default=20, type=click.IntRange(1), help="Findings shown in the terminal."),
        PRECISION,
        CACHE_DIR,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_audit(data, labels, image_root, task, backbone, folds, seed, label_depth, out, decisions, top, precision,
              cache_dir):
    from vistrain.analysis.audit import audit
    from vistrain.analysis.audit_report import write_audit
    from vistrain.data.decisions import Decisions

    source = data_source(data, labels)
    chosen = Decisions.resolve(decisions, source)
    result = audit(source, task, image_root, backbone, folds, seed, label_depth, cache_dir, decisions,
                   precision=precision)
    paths = write_audit(out, result, str(source))
    name, value, low, high = result.metric
    console.print(f"audited {len(result.files)} images ({result.task}, {result.folds}-fold cross-validation) in "
                  f"{result.seconds:.1f} s; cross-validated {name} {value:.4f} (95% interval {low:.4f}–{high:.4f})")
    table = Table(title=f"review queue: {len(result.findings)} finding(s)"
                        + (f", the first {top}" if len(result.findings) > top else ""), title_justify="left")
    for column in ("#", "file", "finding", "given", "suggested", "score"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left", overflow="fold")
    for rank, finding in enumerate(result.findings[:top], 1):
        table.add_row(str(rank), shown(finding.file.name), finding.kind, shown(finding.given),
                      shown(finding.suggested), f"{finding.score:.3f}")
    results.print(table)
    report_skipped(result.skipped)
    console.print(f"written: {', '.join(str(p) for p in paths)}")
    return result, chosen, source


@main.command("audit")
@audit_options
@click.option("--serve", is_flag=True, help="Then open the review page (as `vistrain review`).")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8001, type=click.IntRange(0, 65535))
@friendly_errors
def audit_command(serve: bool, host: str, port: int, **settings) -> None:
    """Audit the labelled images in DATA (a folder, or an SVHN .mat file) or --labels: label issues, off-topic images and near duplicates, from
    out-of-sample predictions of every image (training and validation together)."""
    result, decisions, source = run_audit(**settings)
    if serve:
        _serve(result, decisions, source, host, port)


@main.command()
@audit_options
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8001, type=click.IntRange(0, 65535))
@friendly_errors
def review(host: str, port: int, **settings) -> None:
    """Audit DATA, then review its findings in the browser: keep, exclude or relabel each image. Decisions are
    saved at once to the decisions file, which train, evaluate, split, check and audit honour."""
    _serve(*run_audit(**settings), host, port)


def _serve(result, decisions, source, host: str, port: int) -> None:
    import uvicorn

    from vistrain.analysis.review import create_review_app

    console.print(f"review page: http://{host}:{port}/ (decisions: {decisions.path}); Ctrl-C to stop")
    uvicorn.run(create_review_app(result, decisions, str(source)), host=host, port=port)
