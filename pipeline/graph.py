"""The pipeline graph: source -> decode (CPU tasks) -> preprocess (CPU tasks) -> infer (actor pool) -> Parquet.

Decode and preprocess are sized apart from the model actors, so the accelerator never waits on decoding;
Ray Data streams blocks between them and shows its progress bars.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import ray
from ray.data import ActorPoolStrategy

from pipeline.config import PipelineConfig
from pipeline.infer import InferActor
from pipeline.rows import OK
from pipeline.sink import ParquetSink, prepare_output
from pipeline.source import list_videos
from pipeline.stages import DecodeStage, PreprocessStage
from pipeline.storage import Storage
from pipeline.summary import summarize

log = logging.getLogger(__name__)


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


def run(config: PipelineConfig) -> dict:
    """Run the job on the connected Ray cluster (or a local one) and return its summary."""
    storage = Storage(config.storage)
    run_id = config.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    start = time.perf_counter()
    videos = list_videos(config.source, storage)
    done = prepare_output(config.output, storage, config.overwrite)
    todo = [{**row, "status": OK, "error_type": None, "error_message": None} for row in videos if row["id"] not in done]
    log.info("%d videos listed, %d already done, %d to process", len(videos), len(videos) - len(todo), len(todo))
    if todo:
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING)
        sink = ParquetSink(config.output, config.storage, run_id, config.rows_per_file)
        build_dataset(config, todo).write_datasink(sink)
    run_info = {
        "run_id": run_id,
        "listed": len(videos),
        "skipped_done": len(videos) - len(todo),
        "wall_seconds": round(time.perf_counter() - start, 3),
        "fastav": config.fastav.summary(),
        "model": config.model.checkpoint,
    }
    return summarize(config.output, storage, run_info)
