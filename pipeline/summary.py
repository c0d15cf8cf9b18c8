"""Run summary: counts, errors by type, tokens and FLOPs saved, throughput; a table and `_summary.json`.

Wall time and videos/s are the progress's (`pipeline.progress`): the wall time is taken from the job's clock
just before the summary is written, so it includes reading the parts back.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.compute as pc

from pipeline.errors import retryable
from pipeline.progress import RunClock, format_rate, throughput
from pipeline.sink import SUMMARY_NAME, read_parts
from pipeline.storage import Storage, join

_COLUMNS = [
    "id", "status", "error_type", "run_id", "tokens_input", "tokens_last_layer", "av_tokens_last_layer",
    "tokens_video", "tokens_audio", "flops_unpruned", "flops_pruned", "decode_ms", "preprocess_ms", "prefill_ms",
    "generate_ms", "shadow_token_agreement", "shadow_first_token_kl", "batch_rows", "kv_cache_bytes",
    "kv_cache_bytes_unpruned", "decode_mode", "decode_graphs", "decode_compile_ms",
]  # fmt: skip


def _sum(table, column) -> float:
    return float(pc.sum(table[column]).as_py() or 0)


def _mean(table, column) -> float | None:
    value = pc.mean(table[column]).as_py()
    return round(value, 1) if value is not None else None


def _shadow(ok) -> dict:
    """Agreement of the shadow rows (generated unpruned too) with their pruned outputs."""
    rows = ok.filter(pc.is_valid(ok["shadow_token_agreement"]))
    mean = pc.mean(rows["shadow_token_agreement"]).as_py()
    kl = pc.mean(rows["shadow_first_token_kl"]).as_py()
    return {
        "rows": rows.num_rows,
        "mean_token_agreement": round(mean, 4) if mean is not None else None,
        "mean_first_token_kl": round(kl, 4) if kl is not None else None,
    }


def _decode(ok) -> dict:
    """How decoding ran: rows per mode, and the graphs compiled and their compile time (each row of a batch carries
    its batch's, so a row counts for 1/batch_rows of it)."""
    modes = Counter(v for v in ok["decode_mode"].to_pylist() if v)
    share = pc.divide(pc.cast(pc.fill_null(ok["decode_graphs"], 0), "float64"), pc.cast(ok["batch_rows"], "float64"))
    compile_ms = pc.divide(pc.fill_null(ok["decode_compile_ms"], 0.0), pc.cast(ok["batch_rows"], "float64"))
    kv, kv_unpruned = _sum(ok, "kv_cache_bytes"), _sum(ok, "kv_cache_bytes_unpruned")
    return {
        "rows_by_mode": dict(modes),
        "graphs_compiled": round(float(pc.sum(share).as_py() or 0)),
        "compile_seconds": round(float(pc.sum(compile_ms).as_py() or 0) / 1000.0, 3),
        "kv_cache_bytes_per_video": round(kv / ok.num_rows) if ok.num_rows and kv else None,
        "kv_cache_bytes_per_video_unpruned": round(kv_unpruned / ok.num_rows) if ok.num_rows and kv else None,
        "kv_cache_ratio": round(kv / kv_unpruned, 4) if kv_unpruned else None,
    }


def summarize(output: str, storage: Storage, run: dict, clock: RunClock) -> dict:
    """Summary of everything in `output` (all runs so far) plus this run's counts and throughput, with the wall
    time of `clock` (the job's) at the moment it is written."""
    table = read_parts(output, storage, _COLUMNS)
    ok = table.filter(pc.equal(table["status"], "success"))
    this_run = table.filter(pc.equal(table["run_id"], run["run_id"]))
    flops_unpruned, flops_pruned = _sum(ok, "flops_unpruned"), _sum(ok, "flops_pruned")
    summary = {
        **run,
        "wall_seconds": None,  # set last, just before writing
        "output": output,
        "videos": table.num_rows,
        "success": ok.num_rows,
        "error": table.num_rows - ok.num_rows,
        "errors_by_type": dict(Counter(v for v in table["error_type"].to_pylist() if v)),
        "errors_retryable": sum(1 for v in table["error_type"].to_pylist() if v and retryable(v)),
        "processed_this_run": this_run.num_rows,
        "videos_per_second_this_run": None,
        "tokens_input": int(_sum(ok, "tokens_input")),
        "tokens_last_layer": int(_sum(ok, "tokens_last_layer")),
        "tokens_video": int(_sum(ok, "tokens_video")),
        "tokens_audio": int(_sum(ok, "tokens_audio")),
        "flops_unpruned": flops_unpruned,
        "flops_pruned": flops_pruned,
        "flops_saved": flops_unpruned - flops_pruned,
        "flops_ratio": round(flops_pruned / flops_unpruned, 4) if flops_unpruned else None,
        "mean_ms": {c: _mean(ok, c) for c in ("decode_ms", "preprocess_ms", "prefill_ms", "generate_ms")},
        "shadow": _shadow(ok),
        "decode": _decode(ok),
    }
    wall = round(clock.seconds(), 3)  # the progress's last line gets this same figure
    summary["wall_seconds"] = wall
    summary["videos_per_second_this_run"] = round(throughput(this_run.num_rows, wall), 3)
    storage.write(join(output, SUMMARY_NAME), json.dumps(summary, indent=2).encode())
    return summary


def _rate(summary: dict) -> float:
    return throughput(summary["processed_this_run"], summary["wall_seconds"])


def format_summary(summary: dict) -> str:
    lines = [
        f"run {summary['run_id']} -> {summary['output']}",
        f"  videos          {summary['videos']} ({summary['success']} success, {summary['error']} error)",
        f"  this run        {summary['processed_this_run']} in {summary.get('wall_seconds', 0):.1f}s"
        # from the same two figures as the progress's last line (the JSON's rate is rounded: rounding it again
        # could differ in the last digit)
        + (f" ({format_rate(_rate(summary))})" if summary["videos_per_second_this_run"] else ""),
    ]
    for kind, count in sorted(summary["errors_by_type"].items()):
        policy = "transient: a rerun retries it" if retryable(kind) else "permanent: a rerun skips it"
        lines.append(f"  error           {kind}: {count} ({policy})")
    if summary["flops_ratio"] is not None:
        lines += [
            f"  tokens          {summary['tokens_input']} in, {summary['tokens_last_layer']} at the last layer",
            f"  prefill FLOPs   {summary['flops_ratio']:.1%} of unpruned "
            f"({summary['flops_saved'] / 1e9:.2f} GFLOPs saved)",
            "  mean ms         " + ", ".join(f"{k[:-3]} {v}" for k, v in summary["mean_ms"].items()),
        ]
    decode = summary.get("decode") or {}
    if decode.get("kv_cache_ratio") is not None:
        modes = ", ".join(f"{mode} {rows}" for mode, rows in sorted(decode["rows_by_mode"].items()))
        compiled = decode["graphs_compiled"]
        lines.append(
            f"  decode          {modes} rows; KV cache {decode['kv_cache_bytes_per_video'] / 2**20:.1f} MiB per video, "
            f"{decode['kv_cache_ratio']:.1%} of unpruned"
            + (f"; {compiled} graphs compiled in {decode['compile_seconds']:.1f}s" if compiled else "")
        )
    shadow = summary.get("shadow") or {"rows": 0}
    if shadow["rows"]:
        lines.append(
            f"  shadow          token agreement {shadow['mean_token_agreement']:.3f} with the unpruned model over "
            f"{shadow['rows']} rows (first-token KL {shadow['mean_first_token_kl']:.4f})"
        )
    return "\n".join(lines)
