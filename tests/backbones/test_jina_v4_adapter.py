import torch

from anchorprune.backbones.jina_v4 import jina_visual_mask
from anchorprune.backbones.tiny import tiny_colqwen2


def test_range_rule_is_strictly_between_first_start_and_next_end():
    ids = torch.tensor([[9, 7, 5, 3, 5, 8, 7, 5, 8]])
    assert jina_visual_mask(ids, 7, 8, 5).int().tolist() == [[0, 0, 1, 1, 1, 0, 0, 0, 0]]


def test_fallback_to_pad_tokens_without_markers_and_nothing_without_either():
    ids = torch.tensor([[1, 5, 5, 2], [1, 2, 3, 4]])
    assert jina_visual_mask(ids, 7, 8, 5).int().tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert not jina_visual_mask(ids, 7, 8, None).any()


def test_range_rule_matches_image_pads_on_a_real_qwen2_vl_processor():
    _, proc = tiny_colqwen2()
    import PIL.Image

    batch = proc(images=[PIL.Image.new("RGB", (64, 64))], return_tensors="pt")
    tok = proc.tokenizer
    start, end, pad = (tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    assert torch.equal(jina_visual_mask(batch["input_ids"], start, end, pad), batch["input_ids"] == pad)
