"""Write a run's metrics as JSON, CSV and PNG plots (matplotlib, Agg backend).

Everything here works on the plain dicts made by :mod:`batch_training.metrics`, so the
same code serves ``meme-train`` (``<version>/report/``) and ``meme-evaluate``.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

SUMMARY_FIELDS = ("accuracy", "f1_weighted", "precision_weighted", "recall_weighted", "roc_auc", "pr_auc", "ece", "brier", "log_loss")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_table(results: Mapping[str, Mapping[str, Any]], best: str | None = None) -> str:
    """Text table: one line per model with grouped-CV accuracy (mean +- std over folds),
    test accuracy, test F1 and ROC AUC."""
    head = f"{'model':<16} {'CV acc':>13} {'test acc':>8} {'test F1':>8} {'ROC AUC':>8}"
    lines = [head, "-" * len(head)]
    for name, res in results.items():
        cv, test = res.get("cv") or {}, res.get("test") or {}
        cv_text = f"{cv['mean']:.3f}+-{cv['std']:.3f}" if cv else "-"
        mark = " *" if name == best else ""
        lines.append(
            f"{name:<16} {cv_text:>13} {_fmt(test.get('accuracy')):>8} "
            f"{_fmt(test.get('f1_weighted')):>8} {_fmt(test.get('roc_auc')):>8}{mark}"
        )
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """Text rendering of one metrics dict (for meme-evaluate)."""
    lines = [
        f"rows: {metrics['n']}   accuracy: {_fmt(metrics['accuracy'])}   weighted F1: {_fmt(metrics['f1_weighted'])}   "
        f"ROC AUC ({metrics['auc_average']}): {_fmt(metrics['roc_auc'])}   PR AUC: {_fmt(metrics['pr_auc'])}",
        f"calibration: ECE {_fmt(metrics.get('ece'))} (a calibrated model: {_fmt(metrics.get('ece_floor'))} on {metrics['n']} rows)   Brier {_fmt(metrics.get('brier'))}   log loss {_fmt(metrics.get('log_loss'))}   "
        f"auto-label coverage at 95 % / 98 % precision: {_fmt((metrics.get('coverage') or {}).get('at_95'))} / "
        f"{_fmt((metrics.get('coverage') or {}).get('at_98'))}",
        f"{'class':<20} {'precision':>9} {'recall':>7} {'F1':>7} {'ROC AUC':>8} {'PR AUC':>7} {'support':>8}",
    ]
    for name, pc in metrics["per_class"].items():
        lines.append(
            f"{name:<20} {_fmt(pc['precision']):>9} {_fmt(pc['recall']):>7} {_fmt(pc['f1']):>7} "
            f"{_fmt(pc['roc_auc']):>8} {_fmt(pc['pr_auc']):>7} {pc['support']:>8}"
        )
    classes = metrics["classes"]
    lines.append("confusion matrix (rows = true, columns = predicted): " + ", ".join(classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"  {name:<18} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_report(
    out: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    class_balance: Mapping[str, Mapping[str, int]],
    curves: Mapping[str, Mapping[str, tuple[list[float], list[float]]]],
    extra: Mapping[str, Any] | None = None,
    plots: bool = True,
) -> Path:
    """Write ``metrics.json``, CSVs and plots into ``out``; returns ``out``.

    ``results``: model -> split -> metrics dict; ``class_balance``: split -> class -> count;
    ``curves``: model -> class -> (fpr, tpr) on the test split.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"classes": list(classes), "class_balance": class_balance, "models": results, **(extra or {})}
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    rows = []
    per_class_rows = []
    for model, splits in results.items():
        for split, m in splits.items():
            if not m or "per_class" not in m:
                continue
            rows.append([model, split, m["n"], *[m.get(f) for f in SUMMARY_FIELDS]])
            for cls, pc in m["per_class"].items():
                per_class_rows.append([model, split, cls, pc["precision"], pc["recall"], pc["f1"], pc["roc_auc"], pc["pr_auc"], pc["support"]])
            _write_csv(out / f"confusion_{model}_{split}.csv", ["true\\predicted", *classes], [[c, *r] for c, r in zip(classes, m["confusion_matrix"])])
    _write_csv(out / "metrics.csv", ["model", "split", "n", *SUMMARY_FIELDS], rows)
    _write_csv(out / "per_class.csv", ["model", "split", "class", "precision", "recall", "f1", "roc_auc", "pr_auc", "support"], per_class_rows)
    splits = list(class_balance)
    _write_csv(out / "class_balance.csv", ["class", *splits, "total"], [[c, *[class_balance[s].get(c, 0) for s in splits], sum(class_balance[s].get(c, 0) for s in splits)] for c in classes])
    if plots:
        try:
            _plots(out, results, classes, class_balance, curves)
            _reliability_plot(out, results)
            cascade = (extra or {}).get("cv", {}).get("cascade")
            if cascade:
                _cascade_plot(out, cascade, (extra or {})["cv"].get("chosen_cascade"))
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the trained models
            log.warning("could not draw plots in %s: %s", out, exc)
    log.info("report written to %s", out)
    return out


def _plots(out: Path, results, classes, class_balance, curves) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    # class balance
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(classes) + 2), 3.5))
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(class_balance))
    for i, (split, counts) in enumerate(class_balance.items()):
        ax.bar(x + i * width, [counts.get(c, 0) for c in classes], width, label=split)
    ax.set_xticks(x + width * (len(class_balance) - 1) / 2, classes, rotation=20)
    ax.set_ylabel("images")
    ax.set_title("class balance")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "class_balance.png", dpi=100)
    plt.close(fig)

    # model comparison (test split, else validation)
    names = list(results)
    fields = ("accuracy", "f1_weighted", "roc_auc", "pr_auc")
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(names) + 3), 3.5))
    x = np.arange(len(names))
    width = 0.8 / len(fields)
    for i, f in enumerate(fields):
        vals = [((results[n].get("test") or results[n].get("validation") or {}).get(f) or 0.0) for n in names]
        ax.bar(x + i * width, vals, width, label=f)
    ax.set_xticks(x + width * (len(fields) - 1) / 2, names)
    ax.set_ylim(0, 1.05)
    ax.set_title("model comparison (test split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "model_comparison.png", dpi=100)
    plt.close(fig)

    for name, splits in results.items():
        m = splits.get("test") or splits.get("validation")
        if not m:
            continue
        cm = np.asarray(m["confusion_matrix"])
        fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2.5, 1.1 * len(classes) + 2))
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=30)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: confusion matrix")
        fig.tight_layout()
        fig.savefig(out / f"confusion_{name}.png", dpi=100)
        plt.close(fig)

    for name, per_class in curves.items():
        if not per_class:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for cls, (fpr, tpr) in per_class.items():
            auc = ((results.get(name, {}).get("test") or {}).get("per_class", {}).get(cls, {}) or {}).get("roc_auc")
            ax.plot(fpr, tpr, label=f"{cls} (AUC {_fmt(auc)})")
        ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{name}: ROC one-vs-rest (test)")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"roc_{name}.png", dpi=100)
        plt.close(fig)


def _cascade_plot(out: Path, rows: Sequence[Mapping[str, Any]], chosen: float | None) -> None:
    """Grouped-CV accuracy of the stacked model against the share of images OCR'd, one
    point per cascade threshold: what each OCR call buys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(rows, key=lambda r: r["ocr_share"])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = [100 * r["ocr_share"] for r in pts]
    ys = [r["fold"]["mean"] for r in pts]
    es = [r["fold"]["std"] for r in pts]
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
    for r, x, y in zip(pts, xs, ys):
        label = "always" if r["cascade"] > 1 else f"<{r['cascade']:g}"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
        if chosen is not None and r["cascade"] == chosen:
            ax.plot([x], [y], "r*", markersize=14, label="chosen")
    ax.set_xlabel("images OCR'd (%)")
    ax.set_ylabel("grouped CV accuracy")
    ax.set_title("accuracy vs OCR share (cascade threshold)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_ocr.png", dpi=100)
    plt.close(fig)


def _reliability_plot(out: Path, results: Mapping[str, Mapping[str, Any]]) -> None:
    """Reliability diagram on the test split: claimed confidence against delivered accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect")
    drawn = False
    for name, splits in results.items():
        m = splits.get("test") or {}
        rows = m.get("reliability") or []
        if not rows:
            continue
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o",
                label=f"{name} (ECE {_fmt(m.get('ece'))})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.45 if all(len((s.get("test") or {}).get("classes", [])) == 2 for s in results.values()) else 0.0, 1.0)
    ax.set_title("reliability (test split)")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)
