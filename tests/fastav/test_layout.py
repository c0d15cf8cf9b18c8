import pytest
import torch

from fastav.layout import Modality, SpanLayout, TokenIdLayout, count_modalities, pad_offsets

T, V, A, I, P = (int(m) for m in (Modality.TEXT, Modality.VIDEO, Modality.AUDIO, Modality.IMAGE, Modality.PAD))


def test_token_id_layout_labels_interleaved_tokens_and_padding():
    layout = TokenIdLayout(video_ids=frozenset({7}), audio_ids=frozenset({8}), image_ids=frozenset({9}))
    ids = torch.tensor([[0, 0, 5, 7, 7, 8, 7, 8, 9, 5], [5, 5, 7, 8, 8, 7, 7, 8, 5, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 10])
    labels = layout.labels(ids, mask)
    assert labels[0].tolist() == [P, P, T, V, V, A, V, A, I, T]
    assert labels[1].tolist() == [T, T, V, A, A, V, V, A, T, T]
    assert count_modalities(labels)[0].tolist() == [2, 2, 3, 2, 1]


def test_token_id_layout_needs_ids():
    with pytest.raises(ValueError, match="inputs_embeds only"):
        TokenIdLayout(video_ids=frozenset({7})).labels(None, torch.ones(1, 4))


def test_span_layout_counts_from_first_real_token():
    layout = SpanLayout(((Modality.VIDEO, 1, 3), (Modality.AUDIO, 3, 5)))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    labels = layout.labels(None, mask)
    assert pad_offsets(mask).tolist() == [2, 0]
    assert labels[0].tolist() == [P, P, T, V, V, A, A, T]
    assert labels[1].tolist() == [T, V, V, A, A, T, T, T]
    assert layout.length == 5


def test_span_layout_rejects_empty_spans():
    with pytest.raises(ValueError, match="empty"):
        SpanLayout(((Modality.VIDEO, 5, 5),))
