"""The pipeline graph: source -> decode (CPU tasks) -> preprocess (CPU tasks) -> infer (actor pool) -> Parquet.

Decode and preprocess are sized apart from the model actors, so the accelerator never waits on decoding.
The driver consumes the result stream and writes the Parquet parts itself (the rows are small: text and
stats), so parts land while the job runs instead of waiting for a CPU slot, and it shows progress. Ray's
own progress bars and worker output stay in Ray's logs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import ray
from ray.data import ActorPoolStrategy, DataContext

from pipeline.config import PipelineConfig
from pipeline.errors import SummaryError
from pipeline.infer import InferActor
from pipeline.preflight import preflight
from pipeline.progress import Progress
from pipeline.rows import OK
from pipeline.sink import PartWriter, prepare_output
from pipeline.stages import DecodeStage, PreprocessStage
from pipeline.storage import Storage
from pipeline.summary import summarize

log = logging.getLogger(__name__)
SUMMARY_TRIES = 4


def build_dataset(config: PipelineConfig, rows: list[dict]) -> ray.data.Dataset:
    blocks = max(1, min(len(rows), 1000, -(-len(rows) // config.decode.batch_size)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    # CPU stages declare their own CPUs and memory; differing from the actors' resources also keeps Ray Data
    # from fusing them into the model actors, so decoding runs beside inference instead of before it.
    cpu_stage = dict(
        batch_format="pyarrow",
        batch_size=config.decode.batch_size,
        num_cpus=config.decode.num_cpus,
        memory=config.decode.memory_mb * 2**20,
    )
    ds = ds.map_batches(DecodeStage(config.decode, config.storage), **cpu_stage)
    ds = ds.map_batches(PreprocessStage(config.prompt, config.model, config.storage), **cpu_stage)
    return ds.map_batches(
        InferActor,
        fn_constructor_kwargs={
            "model": config.model,
            "infer": config.infer,
            "fastav_config": config.fastav,
            "storage": config.storage,
        },
        batch_format="pyarrow",
        batch_size=config.infer.batch_size,
        compute=ActorPoolStrategy(size=config.infer.num_actors),
        num_gpus=config.infer.num_gpus,
        num_cpus=config.infer.num_cpus,
    )


def quiet_ray() -> None:
    """Ray Data's progress bars and execution logs, and the workers' output, go to Ray's log files only."""
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know
    if not ray.is_initialized():
        # RAY_ADDRESS (set by Ray's job API and KubeRay) names the cluster; without it, a fresh local Ray. Not
        # ray.init()'s default: it attaches to the last `ray start` cluster recorded in /tmp/ray, and a cluster
        # stopped by a signal (as the README's recipe does) leaves that record behind, so a later run would wait
        # minutes for a GCS that is gone.
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def run(config: PipelineConfig, retry_errors: bool | None = None) -> dict:
    """Run the job on the connected Ray cluster (or a local one) and return its summary.

    Raises InputError before Ray starts on a configuration or input problem, and SummaryError when every row
    is written but the summary could not be.
    """
    storage = Storage(config.storage)
    run_id = config.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    retry = config.retry_errors if retry_errors is None else retry_errors
    start = time.perf_counter()
    videos = preflight(config)
    settled = prepare_output(config.output, storage, config.overwrite, retry)
    todo = [
        {**row, "status": OK, "error_type": None, "error_message": None} for row in videos if row["id"] not in settled
    ]
    skipped_errors = sum(1 for row in videos if settled.get(row["id"]) == "error")
    log.info(
        "%d videos listed: %d to process, %d done earlier, %d failed for good earlier (--retry-errors retries them)",
        len(videos), len(todo), len(videos) - len(todo) - skipped_errors, skipped_errors,
    )  # fmt: skip
    writer = PartWriter(config.output, storage, run_id, config.rows_per_file, config.flush_seconds)
    if todo:
        quiet_ray()
        progress = Progress(len(todo), config.progress_seconds)
        for batch in build_dataset(config, todo).iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = batch.to_pylist()
            writer.add(rows)
            progress.update(rows)
        writer.flush()
        progress.close()
    run_info = {
        "run_id": run_id,
        "listed": len(videos),
        "skipped_done": len(videos) - len(todo),
        "skipped_permanent_errors": skipped_errors,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "fastav": config.fastav.summary(),
        "model": config.model.checkpoint,
    }
    return _summary(config, storage, run_info, writer.rows_written)


def _summary(config: PipelineConfig, storage: Storage, run_info: dict, rows_written: int) -> dict:
    """The summary, retried on top of the storage client's own retries; the data is complete either way."""
    for attempt in range(1, SUMMARY_TRIES + 1):
        try:
            return summarize(config.output, storage, run_info)
        except Exception as error:
            if attempt == SUMMARY_TRIES:
                raise SummaryError(config.output, rows_written, error) from error
            log.warning("summary attempt %d failed (%s: %s); retrying", attempt, type(error).__name__, error)
            time.sleep(2.0 * attempt)
    return {}  # not reached
