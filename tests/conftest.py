import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

from fastav import testing as tiny

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    """Tiny random-weight checkpoints on disk, one per supported family."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "qwen2": tiny.save_qwen2(root / "qwen2"),
        "llama": tiny.save_llama(root / "llama"),
        "omni": tiny.save_omni_thinker(root / "omni"),
    }
