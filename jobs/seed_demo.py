"""Seed object storage with the embedded demo: a tiny Qwen2.5-Omni checkpoint and synthetic mp4 clips.

    python -m jobs.seed_demo --videos s3://videos/demo/ --model s3://models/tiny-omni [--clips 16]

Used by docker-compose's submitter; endpoint and credentials come from the environment (AWS_ENDPOINT_URL).
Idempotent: objects that exist are written again with the same content.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fastav import testing
from pipeline import synthetic
from pipeline.storage import Storage, join


def seed(videos: str, model: str, clips: int, storage: Storage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = testing.save_omni_thinker(Path(tmp) / "model", processor=True)
        for path in sorted(checkpoint.iterdir()):
            storage.write(join(model, path.name), path.read_bytes())
        for path in synthetic.write_corpus(Path(tmp) / "videos", count=clips):
            storage.write(join(videos, path.name), path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="prefix or directory for the clips")
    parser.add_argument("--model", required=True, help="prefix or directory for the checkpoint")
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args(argv)
    seed(args.videos, args.model, args.clips, Storage())
    print(f"seeded {args.clips} clips under {args.videos} and a tiny checkpoint under {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
