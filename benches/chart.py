"""Draws the per-query ratios of a meshql-bench TPC-H results CSV as a bar
chart: admin / DataFusion (the cost of governance), analyst / admin (the
cost of masks and row filters) and admin / DuckDB, one group per query.

    python chart.py RESULTS.csv CHART.png TITLE
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("admin_over_datafusion", "meshql admin / DataFusion", "#4c72b0"),
    ("analyst_over_admin", "meshql analyst (masked, filtered) / admin", "#55a868"),
    ("admin_over_duckdb", "meshql admin / DuckDB", "#c44e52"),
]


def main():
    path, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    queries = [r["query"] for r in rows]
    width = 0.27
    fig, ax = plt.subplots(figsize=(14, 5))
    for i, (key, label, color) in enumerate(SERIES):
        values = [float(r[key]) if r[key] else 0.0 for r in rows]
        xs = [q + (i - 1) * width for q in range(len(rows))]
        ax.bar(xs, values, width, label=label, color=color)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(queries)
    ax.set_ylabel("ratio of median times (below 1: faster)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
