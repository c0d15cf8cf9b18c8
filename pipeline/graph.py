"""The pipeline graph: source -> decode (CPU tasks) -> preprocess (CPU tasks) -> infer (actor pool) -> Parquet.

Decode and preprocess are sized apart from the model actors, so the accelerator never waits on decoding.
The driver consumes the result stream and writes the Parquet parts itself (the rows are small: text and
stats), so parts land while the job runs instead of waiting for a CPU slot, and it shows progress. Results
stream to the driver as each model batch finishes: an inference task is exactly one model batch (a strict
repartition to `infer.batch_size` rows in front of the actors; without it an actor task took a whole decode
block, several model batches, and gave its rows back only at its end), and the driver's iterator prefetches
nothing (a prefetched block was handed over only when the next one arrived). Ray's own output stays in Ray's
logs (`pipeline.ray_output`); a Ray this run starts itself goes with its driver (`pipeline.ray_owner`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator

import ray
from ray.data import ActorPoolStrategy, DataContext

from pipeline.config import PipelineConfig
from pipeline.errors import SummaryError
from pipeline.infer import InferActor
from pipeline.preflight import preflight
from pipeline.progress import Progress, RunClock
from pipeline.ray_output import RayOutput
from pipeline.ray_owner import RayOwner
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
    # One model batch per actor task, so each batch's rows leave the actor when it is done (and the model never
    # gets the odd remainder batch of a bundle); fused into the preprocess tasks when decode.batch_size is a
    # multiple of infer.batch_size.
    ds = ds.repartition(target_num_rows_per_block=config.infer.batch_size, strict=True)
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


def _quiet_ray_data() -> None:
    """No Ray Data progress bars (ours shows); their "progress bars disabled" notice is not news either."""
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _session_logs() -> str | None:
    try:
        return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    except AttributeError:
        return None  # no local node (a client connection)


@contextlib.contextmanager
def ray_session(output: RayOutput) -> Iterator[None]:
    """Ray for one run: the one this process is connected to; else the cluster RAY_ADDRESS names (set by Ray's job
    API and KubeRay); else a fresh local Ray that this run owns: a watchdog stops it if the driver is killed, and
    the run shuts it down at its end. Not ray.init()'s default: it attaches to the last `ray start` cluster
    recorded in /tmp/ray, and a cluster stopped by a signal (as the README's recipe does) leaves that record
    behind, so a later run would wait minutes for a GCS that is gone."""
    started, owner = False, None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"
        owner = RayOwner() if address == "local" else None
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except BaseException:
            if owner is not None:
                owner.close()
            raise
        started = True
    try:
        output.attach(_session_logs())
        log.info("Ray's own messages go to %s", output.path)
        _quiet_ray_data()
        yield
    finally:
        if started:
            ray.shutdown()
        if owner is not None:
            owner.close()


def run(config: PipelineConfig, retry_errors: bool | None = None) -> dict:
    """Run the job on the connected Ray cluster (or a local one) and return its summary.

    Raises InputError before Ray starts on a configuration or input problem, and SummaryError when every row
    is written but the summary could not be.
    """
    clock = RunClock()  # the job's wall time: progress and summary read this one clock
    storage = Storage(config.storage)
    run_id = config.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    retry = config.retry_errors if retry_errors is None else retry_errors
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
    writer = PartWriter(config.output, storage, run_id, config.sink.max_rows_per_part, config.sink.max_seconds_per_part)
    with contextlib.ExitStack() as stack:
        progress = None
        if todo:
            output = stack.enter_context(RayOutput())
            progress = Progress(len(todo), config.progress_seconds, clock=clock)
            stack.callback(progress.close)  # the last line, when the summary below does not get to print it
            try:
                with ray_session(output):
                    batches = build_dataset(config, todo).iter_batches(
                        batch_size=None, batch_format="pyarrow", prefetch_batches=0
                    )
                    for batch in batches:
                        rows = batch.to_pylist()
                        writer.add(rows)
                        progress.update(rows)
            finally:
                writer.close()  # what has arrived is written, also when the run stops early
        run_info = {
            "run_id": run_id,
            "listed": len(videos),
            "skipped_done": len(videos) - len(todo),
            "skipped_permanent_errors": skipped_errors,
            "fastav": config.fastav.summary(),
            "model": config.model.checkpoint,
        }
        summary = _summary(config, storage, run_info, writer.rows_written, clock)
        if progress is not None:
            progress.close(summary["wall_seconds"])  # the same wall time and videos/s as the summary
    return summary


def _summary(config: PipelineConfig, storage: Storage, run_info: dict, rows_written: int, clock: RunClock) -> dict:
    """The summary, retried on top of the storage client's own retries; the data is complete either way."""
    for attempt in range(1, SUMMARY_TRIES + 1):
        try:
            return summarize(config.output, storage, run_info, clock)
        except Exception as error:
            if attempt == SUMMARY_TRIES:
                raise SummaryError(config.output, rows_written, error) from error
            log.warning("summary attempt %d failed (%s: %s); retrying", attempt, type(error).__name__, error)
            time.sleep(2.0 * attempt)
    return {}  # not reached
