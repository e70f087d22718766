"""How smoothly each recorded seed's policy acts, against how far it got: every results record's seeds with
`action_jitter` in their validation table (docs/results/*/runs/<point>-seed<k>-validation.csv).

    python bench/records_jitter.py [RESULTS_DIR] [--until YYYY-MM-DD]   # default docs/results, every record

Per seed: the median `action_jitter` (the deterministic policy's mean absolute action change per step, per action
entry) over its last 750 epochs, and its best validation return. Then the seeds that left standing (best >= 2,000),
grouped by that jitter, and the rank correlation between the two. A seed recorded twice (a record that names an
earlier one's files) counts once. `--until` keeps the records of that date and before (their folders' names
start with the date), so a number quoted from them stays reproducible as records are added. Reads only CSVs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_summary import markdown  # noqa: E402

LEFT_STANDING = 2000.0  # an idle Ant scores ~1.28k; the records count a seed past 2,000 validation as moving
LAST_EPOCHS = 750
GROUPS = ((0.0, 0.25), (0.25, 0.30), (0.30, float("inf")))
FILE = re.compile(r"(?P<record>[^/]+)/runs/(?P<point>.+)-seed(?P<seed>\d+)-validation\.csv$")


def seeds(results: Path, until: str = "9999-12-31") -> pd.DataFrame:
    rows = []
    for path in sorted(results.glob("*/runs/*-seed*-validation.csv")):
        if path.parent.parent.name[:10] > until:
            continue
        table = pd.read_csv(path)
        if "action_jitter" not in table or table["action_jitter"].isna().all():
            continue  # recorded before the column
        table = table.drop_duplicates("epoch", keep="last")
        last = table[table["epoch"] >= table["epoch"].max() - LAST_EPOCHS]
        name = FILE.search(path.relative_to(results).as_posix())
        rows.append({"record": name["record"], "point": name["point"], "seed": int(name["seed"]),
                     "epochs": int(table["epoch"].max()), "jitter": last["action_jitter"].median(),
                     "best_validation": table["val_return_mean"].max()})  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates(["point", "seed", "epochs", "best_validation"]).reset_index(drop=True)


def groups(frame: pd.DataFrame) -> pd.DataFrame:
    moving = frame[frame["best_validation"] >= LEFT_STANDING]
    rows = []
    for low, high in GROUPS:
        best = moving.loc[(moving["jitter"] >= low) & (moving["jitter"] < high), "best_validation"]
        rows.append({"jitter": f"[{low:.2f}, {high:.2f})", "seeds": len(best), "mean": best.mean(),
                     "median": best.median(), "min": best.min(), "max": best.max()})  # fmt: skip
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "results"
    )
    parser.add_argument("--until", default="9999-12-31", help="only records of this date (YYYY-MM-DD) and before")
    args = parser.parse_args(argv)
    results = args.results
    frame = seeds(results, args.until)
    if frame.empty:
        print(f"no validation table with action_jitter under {results}")
        return 1
    print(markdown(frame), end="\n\n")
    moving = frame[frame["best_validation"] >= LEFT_STANDING]
    print(f"Seeds that left standing (best validation >= {LEFT_STANDING:,.0f}): {len(moving)} of {len(frame)}")
    print(markdown(groups(frame)), end="\n\n")
    rho = moving["jitter"].corr(moving["best_validation"], method="spearman")
    print(f"Spearman rank correlation, jitter vs best validation, seeds that left standing: {rho:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
