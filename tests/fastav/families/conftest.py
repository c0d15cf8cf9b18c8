"""Tiny checkpoints of the multimodal families, with their processors, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastav import testing as tiny
from fastav.testing import qwen3_omni as omni

# Per row: frames, frame side (px), audio seconds (used by the Omni family only), user prompt. Rows differ in
# frame count, frame size and prompt length, so the batch is left padded.
SPECS = [
    (8, 112, 3.0, "What happens?"),
    (4, 96, 2.0, "Describe the scene and the sound in detail please."),
    (6, 112, 1.5, "Why?"),
]


# The session's checkpoints (tests/conftest.py `family_checkpoints`) by name, plus full-model checkpoints.
@pytest.fixture(scope="session")
def qwen3_omni(family_checkpoints) -> Path:
    return family_checkpoints["qwen3_omni"]


@pytest.fixture(scope="session")
def qwen3_omni_full(tmp_path_factory) -> Path:
    return omni.save_qwen3_omni(tmp_path_factory.mktemp("full") / "qwen3_omni_full", processor=True, full=True)


@pytest.fixture(scope="session")
def qwen3_vl(family_checkpoints) -> Path:
    return family_checkpoints["qwen3_vl"]


@pytest.fixture(scope="session")
def qwen3_vl_moe(family_checkpoints) -> Path:
    return family_checkpoints["qwen3_vl_moe"]


@pytest.fixture(scope="session")
def qwen2_5_vl(family_checkpoints) -> Path:
    return family_checkpoints["qwen2_5_vl"]


@pytest.fixture(scope="session")
def _batches() -> dict:
    return {}


@pytest.fixture
def family_batch(request, _batches):
    """`family_batch(name)` -> (checkpoint path, a fresh copy of its processed 3-row batch)."""

    def get(name: str) -> tuple[Path, dict]:
        path = request.getfixturevalue(name)
        if name not in _batches:
            _batches[name] = tiny.processed_batch(path, SPECS)
        batch = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in _batches[name].items()}
        return path, batch

    return get
