#!/usr/bin/env python3
# plot_moe.py — draws the CSV of bench/moe_bench (--csv) as a PNG: microseconds per MoE layer
# against batch size, one panel per mix (q2, q4), GEMV and mini-GEMM in the cold, warm and
# indep regimes, with the DRAM floor of batch 1 (6 experts' bytes at the measured bandwidth).
# Needs matplotlib (pip install -r requirements-bench.txt). Owns no measurement.
# Usage: bench/plot_moe.py moe.csv docs/moe_bench.png
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EXPERT_BYTES = {"q2": 6 * 7077888, "q4": 6 * 14155776}  # 6 experts: gate + up + down


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    mixes = [m for m in ("q2", "q4") if any(r["mix"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(mixes), figsize=(6 * len(mixes), 4.5), squeeze=False)
    styles = {("gemv", "cold"): ("tab:blue", "-"), ("gemv", "warm"): ("tab:blue", "--"),
              ("minigemm", "cold"): ("tab:red", "-"), ("minigemm", "warm"): ("tab:red", "--"),
              ("gemv", "indep"): ("tab:blue", ":"), ("minigemm", "indep"): ("tab:red", ":")}
    for ax, mix in zip(axes[0], mixes):
        sel = [r for r in rows if r["mix"] == mix]
        for (path, regime), (color, ls) in styles.items():
            pts = sorted((int(r["batch"]), float(r["median_us"])) for r in sel
                         if r["path"] == path and r["regime"] == regime)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] / 1000 for p in pts], color=color,
                        linestyle=ls, marker="o", label=f"{path} {regime}")
        bw = float(sel[0]["bw_gbs"])
        floor = EXPERT_BYTES[mix] / (bw * 1e9) * 1000
        ax.axhline(floor, color="gray", linestyle=":",
                   label=f"6 experts at {bw:.1f} GB/s ({floor:.2f} ms)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.set_xticklabels(["1", "2", "4", "8", "16"])
        ax.set_xlabel("tokens in the batch (cold/warm: sharing 6 experts; indep: 6 each)")
        ax.set_ylabel("ms per MoE layer (median)")
        ax.set_title(f"{mix} mix, {sel[0]['threads']} threads")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_moe.py moe.csv out.png")
    main(sys.argv[1], sys.argv[2])
