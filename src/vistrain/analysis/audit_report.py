"""The audit's files: audit.csv (the review queue), predictions.csv (out-of-sample, every image) and audit.html
(thumbnails, self-contained, in the report's style)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from vistrain.analysis.audit import KINDS, Audit
from vistrain.analysis.report import thumbnail
from vistrain.core.files import utf8, write_atomic, write_csv
from vistrain.core.html import render
from vistrain.model.predictions import write_predictions

AUDIT_CSV, AUDIT_HTML, OUT_OF_SAMPLE = "audit.csv", "audit.html", "predictions.csv"
MAX_SHOWN = 200  # images per kind on the page, with a count of the rest (audit.csv lists them all)
SCORE_NAMES = {"label issue": "confidence in the given label", "uncertain label": "confidence in the given label",
               "off-topic": "outlier z-score",
               **{kind: "feature cosine" for kind in KINDS if kind.startswith("duplicate")}}
DESCRIPTIONS = {
    "label issue": "Images whose given label the out-of-sample prediction and their nearest neighbours disagree "
                   "with (confident learning); the suggested label is the one they point to.",
    "uncertain label": "Images the out-of-sample prediction puts in another class, though not confidently enough to "
                       "be flagged as label issues: hard images, or labels worth a second look.",
    "off-topic": "Images far from every other image in feature space (robust z-score of the distance to their "
                 "10 nearest neighbours over 3): pictures of something else, blank frames, documents.",
    "duplicate: conflicting labels": "Groups of the same picture (feature cosine >= 0.95) under different labels.",
    "duplicate: train/val leakage": "Groups of the same picture in training and validation: they flatter "
                                    "validation.",
    "duplicate": "Groups of the same picture with the same label, in the same split.",
}


def write_audit(out: Path, result: Audit, source: str) -> list[Path]:
    """Write OUT/audit.csv, OUT/predictions.csv and OUT/audit.html; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / AUDIT_CSV, ["rank", "file", "given_label", "suggested_label", "kind", "score", "split", "detail",
                                "group"],
              [[rank, str(f.file), f.given, f.suggested, f.kind, f"{f.score:.6g}", f.split, f.detail, f.group or ""]
               for rank, f in enumerate(result.findings, 1)])
    write_predictions(out / OUT_OF_SAMPLE, result.predictions)
    by_kind = {kind: [f for f in result.findings if f.kind == kind] for kind in KINDS}
    shown = [f for kind in KINDS for f in by_kind[kind][:MAX_SHOWN]]
    page = render("audit.html.j2", audit=result, source=source, kinds=KINDS, score_names=SCORE_NAMES,
                  descriptions=DESCRIPTIONS, counts={k: len(v) for k, v in by_kind.items()},
                  by_kind={k: v[:MAX_SHOWN] for k, v in by_kind.items()},
                  thumbs={str(f.file): thumbnail(f.file) for f in shown}, skipped=result.skipped,
                  created=datetime.now().strftime("%Y-%m-%d %H:%M"))
    write_atomic(out / AUDIT_HTML, utf8(page))
    return [out / AUDIT_CSV, out / OUT_OF_SAMPLE, out / AUDIT_HTML]
