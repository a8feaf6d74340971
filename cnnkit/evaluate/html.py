"""report.html: one page with an evaluation's figures and tables, beside the files it shows (open it in a browser).

Written with the standard library; every text that comes from data (class names, file names, paths) is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from cnnkit.evaluate.metrics import most_confused, top_k_of

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.warn{color:#a00;font-weight:bold}.muted{color:#666}"""


def report_html(metrics: dict[str, Any], *, title: str, figures: list[tuple[str, str]]) -> str:
    """The page for `metrics` (as metrics.json holds them); `figures`: (file name beside the page, heading)."""
    parts = [f"<h1>{escape(title)}</h1>", _headline(metrics), _per_class(metrics)]
    binary = metrics.get("binary")
    if binary:
        parts.append(_binary(binary))
    for file, heading in figures:
        parts.append(f"<h2>{escape(heading)}</h2><img src=\"{escape(file)}\" alt=\"{escape(heading)}\">")
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _headline(metrics: dict[str, Any]) -> str:
    rows = [("images", f"{metrics['num_samples']:,}")]
    low, high = metrics.get("accuracy_ci95", (None, None))
    accuracy = f"{metrics['accuracy']:.4f}" + (f" (95% interval {low:.4f}-{high:.4f})" if low is not None else "")
    rows.append(("accuracy", accuracy))
    top_k = top_k_of(metrics)
    if top_k:
        rows.append((f"top-{top_k} accuracy", f"{metrics[f'top{top_k}_accuracy']:.4f}"))
    rows.append(("macro F1", f"{metrics['macro_f1']:.4f}"))
    calibration = metrics.get("calibration")
    if calibration:
        rows.append(("calibration", f"ECE {calibration['ece']:.4f}, mean confidence "
                                    f"{calibration['mean_confidence']:.4f}, log loss {calibration['log_loss']:.4f}"
                                    + (f", temperature {metrics['temperature']:.4f} (cnnkit calibrate)"
                                       if "temperature" in metrics else "")))
    for row in metrics.get("selective", []):
        rows.append((f"most confident {row['coverage']:.0%}", f"accuracy {row['accuracy']:.4f} over {row['images']:,} "
                                                              f"images (confidence >= {row['min_confidence']:.3f})"))
    for key, label in (("evaluated_on", "evaluated on"), ("data", "data"), ("best_epoch", "weights of epoch")):
        if metrics.get(key):
            rows.append((label, str(metrics[key])))
    confused = most_confused(metrics["confusion_matrix"], list(metrics["per_class"]))
    if confused:
        rows.append(("most confused (true -> predicted)", ", ".join(f"{t} -> {p}: {n}" for t, p, n in confused)))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    warning = ""
    if metrics.get("non_finite_outputs"):
        warning = (f"<p class=\"warn\">{metrics['non_finite_outputs']} of {metrics['num_samples']} outputs were NaN "
                   "or infinite (a diverged model); they count as wrong.</p>")
    if metrics.get("diverged"):
        warning += f"<p class=\"warn\">Training diverged: {escape(str(metrics['diverged']))}</p>"
    return f"{warning}<table>{table}</table>"


def _per_class(metrics: dict[str, Any]) -> str:
    absent = set(metrics.get("classes_without_images", []))
    rows = []
    for name, row in metrics["per_class"].items():
        recall, f1 = ("-", "-") if name in absent else (f"{row['recall']:.3f}", f"{row['f1']:.3f}")
        rows.append(f"<tr><td>{escape(name)}</td><td>{row['precision']:.3f}</td><td>{recall}</td><td>{f1}</td>"
                    f"<td>{row['support']}</td></tr>")
    return ("<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            f"<th>images</th></tr>{''.join(rows)}</table>")


def _binary(binary: dict[str, Any]) -> str:
    rows = [("positive class", str(binary["positive"])), ("threshold", f"{binary['threshold']:.4f}"),
            ("TPR at the threshold", f"{binary['tpr_at_threshold']:.4f}"),
            ("FPR at the threshold", f"{binary['fpr_at_threshold']:.4f}")]
    if "roc_auc" in binary:
        rows.insert(1, ("ROC AUC", f"{binary['roc_auc']:.4f}"))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<h2>Two classes</h2><table>{table}</table>"
