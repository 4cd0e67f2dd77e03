"""Tiny randomly initialised ColPali / ColQwen2 models with local tokenizers, for tests and benchmarks.

No hub access: configs, tokenizers and processors are built here (`docs/architecture.md` §6).
"""

from __future__ import annotations

import string

import torch


def tiny_gemma_tokenizer():
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"]
    chars = ["▁"] + list(string.ascii_letters + string.digits + string.punctuation) + ["\n"]
    tok = GemmaTokenizer(vocab={t: i for i, t in enumerate(specials + chars)}, merges=[])
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def tiny_qwen2_tokenizer():
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    for s in specials:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    return tok


def tiny_colpali(hidden: int = 32, layers: int = 2, heads: int = 2, kv_heads: int = 1, image_size: int = 32,
                 patch: int = 8, embedding_dim: int = 16, seed: int = 0):
    """``(model, processor)``: ColPaliForRetrieval with (image_size/patch)^2 image tokens."""
    from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor, PaliGemmaConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = tiny_gemma_tokenizer()
    ip = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    ip.image_seq_length = (image_size // patch) ** 2
    proc = ColPaliProcessor(image_processor=ip, tokenizer=tok)
    vlm = PaliGemmaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch, projection_dim=hidden),
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
                         vocab_size=len(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=hidden,
    )
    torch.manual_seed(seed)
    model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm, embedding_dim=embedding_dim)).eval()
    return model, proc


def tiny_colqwen2(hidden: int = 32, layers: int = 2, heads: int = 2, kv_heads: int = 1, pixels: int = 56 * 56,
                  embedding_dim: int = 16, seed: int = 0):
    """``(model, processor)``: ColQwen2ForRetrieval; a 56x56 image gives 4 image-pad tokens."""
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = tiny_qwen2_tokenizer()
    proc = ColQwen2Processor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=14,
                                                 merge_size=2, temporal_patch_size=2),
        tokenizer=tok,
    )
    ids = _vision_token_ids(tok)
    vlm = Qwen2VLConfig(
        text_config=_qwen_text_config(tok, hidden, layers, heads, kv_heads),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm, embedding_dim=embedding_dim)).eval()
    return model, proc


def tiny_qwen2_5_vl(hidden: int = 32, layers: int = 2, heads: int = 2, kv_heads: int = 1, pixels: int = 56 * 56,
                    seed: int = 0):
    """``(model, (image_processor, tokenizer))``: a tiny Qwen2_5_VLForConditionalGeneration (Jina v4's base)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = tiny_qwen2_tokenizer()
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=pixels, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    ids = _vision_token_ids(tok)
    cfg = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tok, hidden, layers, heads, kv_heads),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval(), (ip, tok)


class JinaStandInProcessor:
    """The two calls the Jina v4 adapter makes (``process_images`` / ``process_texts``), as the model card's
    processor behaves: one image per page in a fixed user prompt, per-image pixel rows zero-padded and stacked."""

    PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\n"

    def __init__(self, image_processor, tokenizer) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"

    def process_images(self, images: list) -> dict:
        img = self.image_processor(images=images, return_tensors="pt")
        grid = img["image_grid_thw"]                                       # [B, 3]
        merge = self.image_processor.merge_size ** 2
        texts = [self.PROMPT.replace("<|image_pad|>", "<|image_pad|>" * (int(g.prod()) // merge)) for g in grid]
        batch = dict(self.tokenizer(texts, padding="longest", return_tensors="pt"))
        sizes = (grid[:, 1] * grid[:, 2]).tolist()
        rows = torch.split(img["pixel_values"], sizes)                    # per image [n_i, p]
        width = max(sizes)
        batch["pixel_values"] = torch.stack([torch.cat([r, r.new_zeros(width - len(r), r.shape[1])]) for r in rows])
        batch["image_grid_thw"] = grid
        return batch

    def process_texts(self, texts: list[str], prefix: str | None = None) -> dict:
        texts = [f"{prefix}: {t}" if prefix else t for t in texts]
        return dict(self.tokenizer(texts, padding="longest", return_tensors="pt"))


class JinaStandInModel(torch.nn.Module):
    """Qwen2.5-VL + a multi-vector projector with the remote code's forward signature and output field.

    A STAND-IN for ``jinaai/jina-embeddings-v4`` (whose task LoRA adapters and vendored Qwen2.5-VL code
    need the hub): it exercises the adapter's input handling, visual-range rule and capture only.
    """

    def __init__(self, vlm, dim: int = 16) -> None:
        super().__init__()
        self.vlm = vlm
        self.config = vlm.config
        self.config.multi_vector_projector_dim = dim
        self.multi_vector_projector = torch.nn.Linear(vlm.config.text_config.hidden_size, dim)

    def forward(self, task_label: str, input_ids, attention_mask, **kwargs):
        from types import SimpleNamespace

        if "pixel_values" in kwargs:                                       # undo the per-image padding
            sizes = kwargs["image_grid_thw"][:, 1] * kwargs["image_grid_thw"][:, 2]
            kwargs["pixel_values"] = torch.cat([pv[:n] for pv, n in zip(kwargs["pixel_values"], sizes, strict=True)])
        hidden = self.vlm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                          use_cache=False, **kwargs).hidden_states[-1]    # [B, S, h]
        emb = torch.nn.functional.normalize(self.multi_vector_projector(hidden), dim=-1)
        return SimpleNamespace(multi_vec_emb=emb * attention_mask.unsqueeze(-1))


def tiny_jina_v4(dim: int = 16, **kw):
    """``(model, processor)`` stand-ins for the Jina v4 adapter built on :func:`tiny_qwen2_5_vl`."""
    vlm, (ip, tok) = tiny_qwen2_5_vl(**kw)
    return JinaStandInModel(vlm, dim).eval(), JinaStandInProcessor(ip, tok)


def _vision_token_ids(tok) -> dict[str, int]:
    """The ids of Qwen-VL's image/video pad and vision start/end tokens in ``tok``."""
    return {k: tok.convert_tokens_to_ids(k) for k in ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>"]}


def _qwen_text_config(tok, hidden: int, layers: int, heads: int, kv_heads: int) -> dict:
    """The decoder part of a tiny Qwen2-VL / Qwen2.5-VL config (multimodal RoPE split over t, h, w)."""
    head_dim = hidden // heads
    third = head_dim // 2 // 3
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(tok),
                bos_token_id=0, eos_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [head_dim // 2 - 2 * third, third, third]})
