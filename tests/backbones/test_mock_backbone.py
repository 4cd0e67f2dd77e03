import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.pages import Page


def _pages():
    return [Page(f"p{i}", f"hash{i}", text=f"page topic:t{i}") for i in range(5)]


def test_deterministic_and_window_rows_equal_all_rows():
    mock = MockBackbone()
    a = mock.encode_pages(_pages(), LayerCapture.all())
    b = mock.encode_pages(_pages(), LayerCapture.window([3, 4]))
    for fa, fb in zip(a, b, strict=True):
        assert torch.equal(fa.embeddings, fb.embeddings)
        assert torch.equal(fa.centrality_for([3, 4]), fb.centrality)
        assert torch.equal(fa.eos_attention[3:5], fb.eos_attention)   # EOS rows too (the EOS pruners read the last)
        assert fb.layers == (3, 4)
    assert mock.page_calls == 2


def test_anchors_dominate_middle_layers_only():
    mock = MockBackbone()
    f = mock.encode_pages(_pages()[:1], LayerCapture.all())[0]
    topic = mock.topic_vector("t0")
    anchors = set(torch.topk(f.embeddings @ topic, mock.num_anchors).indices.tolist())
    for layer in range(mock.num_layers):
        top = set(torch.topk(f.centrality[layer], mock.num_anchors).indices.tolist())
        if layer in mock.anchor_layers:
            assert top == anchors
    # outside the anchor layers the anchors are not systematically on top
    outside = [set(torch.topk(f.centrality[layer], 3).indices.tolist()) == anchors
               for layer in range(mock.num_layers) if layer not in mock.anchor_layers]
    assert not all(outside)


def test_query_finds_its_topic_page_first():
    mock = MockBackbone()
    feats = mock.encode_pages(_pages(), LayerCapture.all())
    for i in range(5):
        q = mock.encode_queries([f"what about topic:t{i}?"])[0]  # [m, d]
        scores = torch.stack([(q @ f.embeddings.T).max(dim=1).values.sum() for f in feats])
        assert int(scores.argmax()) == i
