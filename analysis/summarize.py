"""Print a Markdown table of the runs in a folder whose names start with the given prefixes.

python analysis/summarize.py RUNS_DIR PREFIX [PREFIX...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from afictl.reporting.runs import collect_runs


def main(argv: list[str]) -> str:
    root, prefixes = Path(argv[0]), tuple(argv[1:]) or ("",)
    df = collect_runs(root)
    df = df[[Path(d).name.startswith(prefixes) for d in df["run_dir"]]] if not df.empty else df
    lines = [
        "| run | arch | afi_stages | r | epochs | top-1 % (best) | top-5 % | train img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.sort_values("run_dir").iterrows():
        afi = str(r["arch"]).startswith("afi_")
        stages = r["afi_stages"] if isinstance(r["afi_stages"], str) else ("all" if afi else "-")
        red = str(int(r["reduction"])) if pd.notna(r["reduction"]) else ("4" if afi else "-")
        lines.append(
            f"| {Path(r['run_dir']).name} | {r['arch']} | {stages} | {red} | "
            f"{r['epochs_done']}/{r['epochs']} | "
            f"{r['top1']:.2f} | {r['top5']:.2f} | {r['images_per_sec']:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
