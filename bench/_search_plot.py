"""The search benchmark's figure: surrogate curves (median and IQR over seeds), successive
halving against wall time, and the real confirmation runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = result.get("surrogate_comparison", {})
    panels = [k for k in ("digits", "fashion") if k in comps]
    n = len(panels) + 2
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.4), squeeze=False)
    ax_list = list(axes[0])
    for ax, key in zip(ax_list, panels, strict=False):
        c = comps[key]
        for name, s in sorted(c["strategies"].items()):
            if key == "digits" and name == "default":
                continue  # drawn under its own name
            med, lo, hi = s["curve"]["median"], s["curve"]["q25"], s["curve"]["q75"]
            x = range(1, len(med) + 1)
            lw = 2.2 if name in (result.get("default_sampler", {}).get("strategy"), "random") else 1
            (line,) = ax.plot(x, med, label=name, lw=lw)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
        ax.set_title(f"{key} surrogate: median + IQR over {c['seeds']} seeds")
        ax.set_xlabel("COMPLETE trials")
        ax.set_ylabel("hypervolume")
        lo_y = min(
            s["curve"]["q25"][min(9, len(s["curve"]["q25"]) - 1)] for s in c["strategies"].values()
        )
        ax.set_ylim(bottom=lo_y)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = ax_list[len(panels)]
    sh = result.get("sh_vs_full", {})
    if "surrogate" in sh:
        s = sh["surrogate"]
        for name in ("full", "sh"):
            ax.plot(s["curve_wall_s"], s[name]["median"], label=f"surrogate {name}")
            ax.fill_between(s["curve_wall_s"], s[name]["q25"], s[name]["q75"], alpha=0.12)
    if "real" in sh:
        r = sh["real"]
        ax.plot(r["curve_wall_s"], r["curve_full"], "k--", label="real full")
        ax.plot(r["curve_wall_s"], r["curve_sh"], "k:", label="real SH")
    ax.set_title("successive halving vs full budget")
    ax.set_xlabel("wall seconds (2 slots)")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = ax_list[-1]
    for key, run in sorted(result.get("real_runs", {}).get("runs", {}).items()):
        ax.plot(range(1, len(run["hypervolume"]) + 1), run["hypervolume"], label=key)
    ax.set_title("real confirmation (digits small_joint)")
    ax.set_xlabel("COMPLETE trials")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
