"""PNG figures of the quality tools (matplotlib, headless): calibration frontier and rollout heatmap."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


LAYER_KNOB = {"fastv": "fastv_layer", "gradual": "gradual_start"}  # the others: global_layer
MARKERS = "os^Dv<>p"  # per layer swept within a strategy, earliest first
MATCHED_MARKER = "*"


def _layer(settings: dict) -> object:
    return settings.get(LAYER_KNOB.get(settings["strategy"], "global_layer"))


def _short(settings: dict) -> str:
    """A point's settings in a few characters, for annotations: 'L15 k.33 P.2', 'K2 R.5', 'from 2 keep.25'."""

    def num(value) -> str:
        return f"{value:.2f}".rstrip("0").lstrip("0") if isinstance(value, float) else str(value)

    strategy = settings["strategy"]
    if strategy == "fastv":
        return f"K{settings.get('fastv_layer')} R{num(settings.get('fastv_ratio'))}"
    if strategy == "gradual":
        return f"from {settings.get('gradual_start')} keep{num(settings.get('gradual_keep'))}"
    if strategy == "none":
        return "none"
    keep = settings.get("global_cut", settings.get("global_keep_ratio"))
    return f"L{settings.get('global_layer')} k{num(keep)} P{num(settings.get('fine_ratio'))}"


def calibration_figure(
    points: list[dict], frontier: list[dict], max_flops: float | None, title: str, pick: dict | None = None
):
    """The calibration figure (figure, axis, marks): agreement vs FLOPs ratio with the spread over inputs as
    error bars; colour per strategy, marker per layer swept within the strategy (circle the earliest, square
    the next...; a star for the FLOPs-matched setting), the frontier as a line with its points annotated, the
    budget as a rule, and the pick ringed and annotated. `marks` maps "pick" to the pick's (FLOPs, top-1)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    strategies = sorted({p["settings"]["strategy"] for p in points})
    for index, strategy in enumerate(strategies):
        colour = colours[index % len(colours)]
        chosen = [p for p in points if p["settings"]["strategy"] == strategy]
        layers = sorted({_layer(p["settings"]) for p in chosen if not p.get("matched")}, key=lambda l: l or 0)
        groups: dict[str, list[dict]] = {}
        for p in chosen:
            marker = MATCHED_MARKER if p.get("matched") else MARKERS[layers.index(_layer(p["settings"])) % len(MARKERS)]
            groups.setdefault(marker, []).append(p)
        for marker, group in groups.items():
            xs, ys = [p["flops_ratio"] for p in group], [p["top1"] for p in group]
            errors = [(p.get("top1_spread") or {}).get("se") or 0.0 for p in group]
            axis.errorbar(xs, ys, yerr=errors, fmt="none", ecolor=colour, alpha=0.35, lw=0.8)
            size = 90 if marker == MATCHED_MARKER else 26
            label = strategy if marker == next(iter(groups)) else None
            axis.scatter(xs, ys, color=colour, marker=marker, s=size, label=label, edgecolors="k", linewidths=0.3)
    xs, ys = [p["flops_ratio"] for p in frontier], [p["top1"] for p in frontier]
    axis.plot(xs, ys, "k--", lw=1, drawstyle="steps-post", label="frontier")
    for p in frontier:
        at = (p["flops_ratio"], p["top1"])
        axis.annotate(_short(p["settings"]), at, xytext=(4, -9), textcoords="offset points", fontsize=6, color="0.25")
    if max_flops is not None:
        axis.axvline(max_flops, color="grey", lw=1, ls=":", label=f"max FLOPs {max_flops:.0%}")
    marks: dict[str, tuple[float, float]] = {}
    if pick is not None:
        at = (pick["flops_ratio"], pick["top1"])
        axis.scatter(*at, s=260, facecolors="none", edgecolors="red", linewidths=1.6, zorder=5, label="pick")
        text = f"pick: {pick['settings']['strategy']} {_short(pick['settings'])}"
        text += f"\ntop-1 {pick['top1']:.3f}, KL {pick['kl']:.3f}"
        style = {"textcoords": "offset points", "ha": "right", "fontsize": 7, "color": "red"}
        axis.annotate(text, at, xytext=(-10, 18), arrowprops={"arrowstyle": "-", "color": "red", "lw": 0.8}, **style)
        marks["pick"] = at
    axis.set(xlabel="prefill FLOPs, pruned / unpruned", ylabel="teacher-forced top-1 agreement", title=title)
    axis.grid(alpha=0.3)
    colour_legend = axis.legend(fontsize=7, loc="lower right")
    axis.add_artist(colour_legend)
    from matplotlib.lines import Line2D

    names = ((MARKERS[0], "earliest layer swept"), (MARKERS[1], "next layer"), (MATCHED_MARKER, "FLOPs-matched"))
    shapes = [Line2D([], [], ls="", marker=m, color="0.4", label=name) for m, name in names]
    axis.legend(handles=shapes, fontsize=7, loc="upper left", title="marker", title_fontsize=7)
    figure.tight_layout()
    return figure, axis, marks


def calibration(
    points: list[dict],
    frontier: list[dict],
    max_flops: float | None,
    path: Path,
    title: str,
    pick: dict | None = None,
) -> Path:
    """`calibration_figure` written to `path` (PNG)."""
    plt = _pyplot()
    figure, _, _ = calibration_figure(points, frontier, max_flops, title, pick)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def rollout(binned: list[list[float]], edges: list[int], spans: list[tuple[str, int, int]], path: Path, title: str):
    """Layers x position bins of the last query's rollout mass, with the modality spans marked below."""
    import numpy as np

    plt = _pyplot()
    data = np.asarray(binned)
    figure, (axis, strip) = plt.subplots(
        2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [12, 1]}, constrained_layout=True
    )
    image = axis.imshow(
        np.log10(data + 1e-6), aspect="auto", origin="lower", extent=(edges[0], edges[-1], -0.5, len(data) - 0.5)
    )
    figure.colorbar(image, ax=axis, label="log10 rollout mass per bin")
    axis.set(ylabel="layer", title=title)
    colours = {"text": "#bbbbbb", "video": "#1f77b4", "audio": "#ff7f0e", "image": "#2ca02c"}
    for name, start, end in spans:
        strip.axvspan(start, end, color=colours.get(name, "k"), label=name)
    handles = {h.get_label(): h for h in strip.patches}
    strip.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    strip.set(yticks=[], xlabel="input position")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
