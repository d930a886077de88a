"""`vistrain audit` against cleanlab on planted label flips and off-topic photos, and on elpv's real label noise.

    python benchmarks/audit.py            # needs ../shared/datasets/cats-vs-dogs and `pip install cleanlab`

Cats-vs-dogs (train + val, 1,000 photos): 5% of the labels flipped (seeded), plus off-topic pictures that are
neither cats nor dogs (scikit-image's sample pictures and elpv solar cells) labelled at random. The anchor, in the
same run and on the same features: cleanlab's `find_label_issues` on 5-fold cross-validated logistic-regression
probabilities, and its `OutOfDistribution` on the features. Elpv (binary, defective >= 0.5): the experts' defect
probabilities of 1/3 and 2/3 mark the images whose binary label is uncertain. cleanlab (AGPL-3.0) is used here
only, never by vistrain itself.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
OFF_TOPIC = ["astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
             "immunohistochemistry", "logo", "moon", "page", "rocket", "text", "clock", "colorwheel", "retina", "cell",
             "stereo_motorcycle"]


def off_topic_pictures(folder: Path) -> list[Path]:
    """scikit-image's bundled sample pictures (no download) and five elpv solar cells, as image files."""
    import elpv_dataset
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in OFF_TOPIC:
        picture = getattr(skimage.data, name)()
        Image.fromarray(picture[0] if isinstance(picture, tuple) else picture).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    cells = sorted((Path(elpv_dataset.__file__).parent / "data" / "images").glob("*.png"))
    return paths + cells[::400][:5]


def cleanlab_anchor(x: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(issues ranked by self-confidence, the whole ranking, OOD scores, seconds) from cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probabilities = cross_val_predict(model, x, labels, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                                      method="predict_proba")
    issues = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    self_confidence = probabilities[np.arange(len(labels)), labels]
    ranking = np.concatenate([issues, [i for i in np.argsort(self_confidence, kind="stable") if i not in set(issues)]])
    ood = OutOfDistribution().fit_score(features=x)
    return issues, ranking, ood, time.perf_counter() - started


def figures(ranking, flagged, planted, off_ranking, off_planted) -> dict:
    k, planted, flagged = len(planted), set(planted), set(flagged)
    row = {"recall@k": len(set(ranking[:k]) & planted) / k, "flagged": len(flagged),
           "precision": len(flagged & planted) / max(1, len(flagged)), "recall": len(flagged & planted) / k}
    if off_planted is not None:
        row["off-topic in top 2x"] = f"{len(set(off_ranking[: 2 * len(off_planted)]) & set(off_planted))}/{len(off_planted)}"
    return row


def run_vistrain(csv_path: Path, root: Path, cache: Path, task: str):
    from vistrain.analysis.audit import audit

    started = time.perf_counter()
    result = audit(csv_path, task=task, image_root=root, cache_dir=cache, show_progress=False)
    return result, time.perf_counter() - started


def vistrain_rankings(result) -> tuple[list[int], list[int], list[int]]:
    """(label ranking, flagged label issues, off-topic ranking) as indices into result.files."""
    where = {str(f): i for i, f in enumerate(result.files)}
    flagged = [where[str(f.file)] for f in result.findings if f.kind == "label issue"]
    p = result.predictions
    confidence = p.outputs[np.arange(len(p.files)), p.targets]
    rest = [i for i in np.argsort(confidence, kind="stable") if i not in set(flagged)]
    return flagged + rest, flagged, list(np.argsort(-result.outlier_z, kind="stable"))


def write_csv(path: Path, rows: list[tuple[Path, str, str]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        writer.writerows((str(p), label, split) for p, label, split in rows)


def cats_vs_dogs(scratch: Path, cache: Path, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [(p, name, split) for split in ("train", "val") for name in ("cat", "dog")
            for p in sorted((SHARED / split / name).glob("*.jpg"))]
    flips = set(rng.choice(len(rows), size=len(rows) // 20, replace=False).tolist())
    given = [(p, ({"cat": "dog", "dog": "cat"}[n] if i in flips else n), s) for i, (p, n, s) in enumerate(rows)]
    off = off_topic_pictures(scratch / "off-topic")
    given += [(p, ("cat", "dog")[int(rng.integers(2))], "train") for p in off]
    write_csv(scratch / "cats.csv", given)
    root = Path(os.path.commonpath([str(p) for p, _, _ in given]))
    warm, _ = run_vistrain(scratch / "cats.csv", root, cache, "binary")  # features computed and cached once
    result, seconds = run_vistrain(scratch / "cats.csv", root, cache, "binary")
    where = {str(f): i for i, f in enumerate(result.files)}
    planted = [where[str(given[i][0])] for i in flips]
    planted_off = [where[str(p)] for p in off]
    ranking, flagged, off_ranking = vistrain_rankings(result)
    table = [{"data": "cats-vs-dogs", "method": "vistrain audit", **figures(ranking, flagged, planted, off_ranking,
                                                                           planted_off),
              "seconds": f"{seconds:.1f} (audit) / {result.seconds:.1f} (scoring)",
              "cv accuracy": "{1:.3f} [{2:.3f}, {3:.3f}]".format(*result.metric)}]
    x = _features(result, cache)
    issues, clean_ranking, ood, clean_seconds = cleanlab_anchor(x, result.predictions.targets, seed)
    table.append({"data": "cats-vs-dogs", "method": "cleanlab (LR 5-fold)",
                  **figures(list(clean_ranking), list(issues), planted, list(np.argsort(ood, kind="stable")),
                            planted_off), "seconds": f"{clean_seconds:.1f}", "cv accuracy": ""})
    return table


def _features(result, cache: Path) -> np.ndarray:
    from vistrain.backbones import get_backbone
    from vistrain.features.extract import extract_features

    backbone = get_backbone("efficientnet_lite0")
    return np.asarray(extract_features(result.files, backbone, backbone.preprocess, cache, show_progress=False).vectors)


def elpv(scratch: Path, cache: Path, seed: int) -> list[dict]:
    from vistrain.data.demo import elpv_labels

    labels = elpv_labels()
    rows = [(p, "defective" if q >= 0.5 else "functional", "train") for p, q, _ in labels]
    write_csv(scratch / "elpv.csv", rows)
    root = Path(os.path.commonpath([str(p) for p, _, _ in rows]))
    run_vistrain(scratch / "elpv.csv", root, cache, "binary")
    result, seconds = run_vistrain(scratch / "elpv.csv", root, cache, "binary")
    probability = {str(p): q for p, q, _ in labels}
    uncertain = [i for i, f in enumerate(result.files) if 0 < probability[str(f)] < 1]
    ranking, flagged, _ = vistrain_rankings(result)
    table = [{"data": "elpv (uncertain = p 1/3, 2/3)", "method": "vistrain audit",
              **figures(ranking, flagged, uncertain, None, None), "seconds": f"{seconds:.1f}",
              "cv accuracy": "{1:.3f} [{2:.3f}, {3:.3f}]".format(*result.metric)}]
    issues, clean_ranking, _, clean_seconds = cleanlab_anchor(_features(result, cache), result.predictions.targets,
                                                              seed)
    table.append({"data": "elpv (uncertain = p 1/3, 2/3)", "method": "cleanlab (LR 5-fold)",
                  **figures(list(clean_ranking), list(issues), uncertain, None, None),
                  "seconds": f"{clean_seconds:.1f}", "cv accuracy": ""})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="feature cache [default: a temporary one]")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not on this machine")
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_dir or Path(scratch) / "cache"
        table = cats_vs_dogs(Path(scratch), cache, args.seed) + elpv(Path(scratch), cache, args.seed)
    columns = ["data", "method", "recall@k", "flagged", "precision", "recall", "off-topic in top 2x", "cv accuracy",
               "seconds"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in table:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                                for c in columns) + " |")


if __name__ == "__main__":
    main()
