"""The end-of-run comparison table, with the paper's published mean JCT beside."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

PUBLISHED_FILE = "published_mean_jct_seconds.json"
# Which published policy each of ours is measured against.
PUBLISHED_COUNTERPART = {"las": "tiresias", "cost-aware": "pollux"}


def load_published(pollux_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{load: {policy: {workload: mean JCT s}}}``, or empty when the file is absent."""
    path = pollux_dir / PUBLISHED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def published_for(published: Mapping, workload: str) -> dict[str, float]:
    """Published figures for a ``load-L/workload-N`` label; empty for other workloads."""
    load, _, name = workload.partition("/")
    by_policy = published.get(load, {})
    return {policy: figures[name] for policy, figures in by_policy.items() if name in figures}


def comparison_table(summaries: Sequence[Mapping[str, object]], published: Mapping) -> pd.DataFrame:
    """One row per run: our figures, the published ones, and ours / counterpart."""
    rows = []
    for s in summaries:
        pub = published_for(published, str(s["workload"]))
        base_policy = str(s["policy"]).split(" ")[0]
        counterpart = PUBLISHED_COUNTERPART.get(base_policy)
        row = {
            "policy": s["policy"], "workload": s["workload"],
            "mean_jct_s": round(float(s["mean_jct_s"]), 1),
            "p95_jct_s": round(float(s["p95_jct_s"])),
            "cost_usd": round(float(s["cost_usd"]), 2),
            "node_hours": round(float(s["node_hours"]), 1),
            "restarts": s["num_restarts"],
        }
        for name in ("tiresias", "pollux", "optimus"):
            row[f"pub_{name}_s"] = pub.get(name, float("nan"))
        ratio = float(s["mean_jct_s"]) / pub[counterpart] if counterpart in pub else float("nan")
        row["vs_published"] = round(ratio, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def render_table(frame: pd.DataFrame) -> str:
    return frame.to_string(index=False, na_rep="-") if not frame.empty else "(no runs)"
