"""Figures for the report: seaborn/matplotlib drawn off-screen and embedded as base64 PNG data URIs."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap(df: pl.DataFrame, rows: str, cols: str, value: str, title: str, fmt: str = ".3f",
            cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> str:
    """A (rows x cols) heatmap of `value`."""
    pivot = df.select(rows, cols, value).to_pandas().pivot_table(index=rows, columns=cols, values=value)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * pivot.shape[1], 1.0 + 0.45 * pivot.shape[0]))
    sns.heatmap(pivot, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar_kws={"label": value}, vmin=vmin, vmax=vmax)
    ax.set_title(title)
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    return to_data_uri(fig)


def bars(df: pl.DataFrame, x: str, y: str, title: str, hue: str | None = None, ylabel: str | None = None,
         ref: float | None = None, ref_label: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * df.height + 2), 3.4))
    sns.barplot(data=df.to_pandas(), x=x, y=y, hue=hue, ax=ax)
    if ref is not None:
        ax.axhline(ref, color="k", lw=1, ls="--", label=ref_label)
        ax.legend()
    ax.set_title(title)
    ax.set_ylabel(ylabel or y)
    ax.tick_params(axis="x", rotation=30)
    return to_data_uri(fig)


def curves(df: pl.DataFrame, x: str, y: str, hue: str, title: str, col: str | None = None,
           logx: bool = False, xlabel: str | None = None, ylabel: str | None = None) -> str:
    """Line plots of y against x, one line per `hue`, one panel per `col`."""
    panels = sorted(df[col].unique().to_list()) if col else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1, 3.6), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        sub = df if panel is None else df.filter(pl.col(col) == panel)
        sns.lineplot(data=sub.sort(x).to_pandas(), x=x, y=y, hue=hue, ax=ax, marker="o", markersize=3)
        ax.set_title(f"{col} = {panel}" if panel is not None else title)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel or y)
        if logx:
            ax.set_xscale("log")
        if ax.get_legend() is not None:
            if panel != panels[-1]:
                ax.get_legend().remove()
            else:  # outside the axes: curves of ten mixtures leave no free corner
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title=hue)
    if col:
        fig.suptitle(title, y=1.03)
    return to_data_uri(fig)


def scaling_fits(points: pl.DataFrame, fits: list[dict], title: str) -> str:
    """Measured final losses against tokens (dots) with each group's fitted L(D) = E + B / D^beta (lines)."""
    groups = sorted(points["group"].unique().to_list())
    palette = dict(zip(groups, sns.color_palette("tab10", len(groups))))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for g in groups:
        sub = points.filter(pl.col("group") == g)
        ax.scatter(sub["tokens"], sub["loss"], color=palette[g], s=18, label=g)
    for f in fits:
        if f["group"] not in palette:
            continue
        d = np.geomspace(f["d_min"], f["d_max"] * 4, 60)
        ax.plot(d, f["E"] + f["B"] / d ** f["beta"], color=palette[f["group"]], lw=1.2)
        ax.axhline(f["E"], color=palette[f["group"]], lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return to_data_uri(fig)


def ratio_curve(df: pl.DataFrame, x: str, y: str, hue: str, title: str, lo: str | None = None,
                hi: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for i, (key, sub) in enumerate(df.sort(x).group_by(hue, maintain_order=True)):
        color = sns.color_palette("tab10")[i % 10]
        label = key[0] if isinstance(key, tuple) else key
        ax.plot(sub[x], sub[y], marker="o", color=color, label=str(label))
        if lo and hi:
            ax.fill_between(sub[x].to_numpy(), sub[lo].to_numpy(), sub[hi].to_numpy(), color=color, alpha=0.15)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def learning_check(lc: pl.DataFrame) -> str:
    """Final loss per run against its budget (one panel per domain), with each mixture's unigram baseline
    (grey ticks) and the uniform baseline ln V (dashed); runs not below their unigram baseline in red."""
    domains = sorted(lc["domain"].unique().to_list())
    fig, axes = plt.subplots(1, len(domains), figsize=(5.2 * len(domains) + 1, 3.8), squeeze=False, sharey=True)
    models = sorted(lc["model"].unique().to_list())
    markers = dict(zip(models, "osD^vP*X"))
    for ax, dom in zip(axes[0], domains):
        sub = lc.filter(pl.col("domain") == dom)
        for model in models:
            m = sub.filter(pl.col("model") == model)
            ok, bad = m.filter(pl.col("below_unigram")), m.filter(~pl.col("below_unigram"))
            ax.scatter(ok["tokens"], ok["loss"], marker=markers[model], s=22, color="tab:blue", alpha=0.7,
                       label=f"{model}" if len(ok) else None)
            ax.scatter(bad["tokens"], bad["loss"], marker=markers[model], s=26, color="tab:red", alpha=0.9,
                       label=f"{model}, not below unigram" if len(bad) else None)
        lo, hi = sub["tokens"].min(), sub["tokens"].max()
        for u in sub["unigram_loss"].unique().to_list():
            ax.hlines(u, lo * 0.8, hi * 1.25, color="0.55", lw=0.8)
        ax.axhline(sub["uniform_loss"][0], color="k", ls="--", lw=1, label=f"uniform ln V = {sub['uniform_loss'][0]:.2f}")
        ax.plot([], [], color="0.55", lw=0.8, label="unigram baseline (per mixture)")
        ax.set_xscale("log")
        ax.set_title(f"domain = {dom}")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("final validation loss (nats/token)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return to_data_uri(fig)


def collapse(cr: pl.DataFrame) -> str:
    """Four panels against generation round, one line per (synthetic type, root): types and entropy at an equal
    budget, mean KL to the test sets, near-duplicate share against the root documents."""
    per = (cr.group_by("synthetic_type", "root_corpus", "round", "corpus")
           .agg(pl.col("types_at_budget").first(), pl.col("entropy_at_budget_nats").first(),
                pl.col("kl_nats").mean(), pl.col("root_near_dup_share").first(), pl.col("budget_tokens").first())
           .sort("round"))
    panels = (("types_at_budget", "types at equal budget"), ("entropy_at_budget_nats", "entropy at equal budget (nats)"),
              ("kl_nats", "KL(test || round), mean over tests"), ("root_near_dup_share", "near-dup share vs root"))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for i, ((stype, root), g) in enumerate(per.group_by("synthetic_type", "root_corpus", maintain_order=True)):
        color = sns.color_palette("tab10")[i % 10]
        for ax, (col, _) in zip(axes, panels):
            sub = g.drop_nulls(col)
            ax.plot(sub["round"], sub[col], marker="o", color=color,
                    label=f"{stype} (from {root}, budget {g['budget_tokens'][0]:,})")
    for ax, (_, label) in zip(axes, panels):
        ax.set_xlabel("generation round (0 = natural root)")
        ax.set_title(label, fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return to_data_uri(fig)
