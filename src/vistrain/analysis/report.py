"""The HTML report: one self-contained file (thumbnails and plots embedded), rendered with Jinja2."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

from vistrain.analysis import plots
from vistrain.analysis.ranking import LIST_TITLES, Entry, analyse, coverage, reliability
from vistrain.core.files import utf8, write_atomic
from vistrain.core.html import render
from vistrain.data.images import UnreadableImage, jpeg_thumbnail
from vistrain.data.samples import Skipped
from vistrain.model.metrics import task_metrics
from vistrain.model.predictions import Predictions
from vistrain.model.run_dir import REPORT
THUMBNAIL_SIZE = 144
COVERAGE_TABLE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
DESCRIPTIONS = {
    "most_confident": "Predicted as the class with the highest probability: what the model finds typical.",
    "least_confident": "Predicted as the class, closest to the decision boundary: hard or ambiguous images.",
    "confidently_wrong": "Predicted as the class with high probability while the label says otherwise: "
                         "wrong labels, or what the model has not understood.",
}

def thumbnail(path: Path) -> str:
    """Base64 JPEG thumbnail, or '' when the file cannot be read any more."""
    try:
        return base64.b64encode(jpeg_thumbnail(path, THUMBNAIL_SIZE, quality=85)).decode()
    except (UnreadableImage, OSError):
        return ""


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def render_report(run: Path, config: dict, predictions: Predictions, history: list[dict], skipped: list[Skipped],
                  source: str, top: int = 10, leaderboard: list[dict] | None = None) -> str:
    """The report as an HTML string; `leaderboard`: a budget's candidates (`run_dir.read_leaderboard`)."""
    p = predictions
    sections, errors = analyse(p, top)
    metrics = task_metrics(p.task, p.targets, p.outputs, p.classes, p.thresholds)
    single_label = p.task in ("binary", "multiclass")
    calibration = reliability(p) if single_label else None
    abstain = coverage(p) if single_label else None
    shown: list[Entry] = [e for lists in sections.values() for by_class in lists.values()
                          for entries in by_class.values() for e in entries] + errors
    thumbs = {str(e.file): thumbnail(e.file) for e in shown}
    figures = {"curves": _b64(plots.training_curves(history)) if history else ""}
    if single_label:
        figures.update(confusion=_b64(plots.confusion_heatmap(metrics["confusion_matrix"], p.classes)),
                       reliability=_b64(plots.reliability_diagram(calibration)),
                       coverage=_b64(plots.coverage_curve(abstain)))
    if p.task == "regression":
        figures["scatter"] = _b64(plots.predicted_vs_true(p.targets, p.outputs, p.classes))
    return render("report.html.j2",
        run_name=run.name, config=config, classes=p.classes, task=p.task, source=source,
        created=datetime.now().strftime("%Y-%m-%d %H:%M"), metrics=metrics, plots=figures, sections=sections,
        errors=errors, titles=LIST_TITLES, descriptions=DESCRIPTIONS, top=top, thumbs=thumbs,
        reliability=calibration, coverage=abstain,
        coverage_rows=[r for r in abstain["rows"] if r["threshold"] in COVERAGE_TABLE_THRESHOLDS] if abstain else [],
        skipped=[{"file": str(s.path), "reason": s.reason} for s in skipped], leaderboard=leaderboard or [],
    )


def write_report(run: Path, *args, **kwargs) -> Path:
    """Render the report (see `render_report`) to RUN/report.html."""
    path = run / REPORT
    write_atomic(path, utf8(render_report(run, *args, **kwargs)))
    return path
