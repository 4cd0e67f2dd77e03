"""Layout-faithful test models: the real checkpoints' depth, head ratio, token ids and page templates, tiny widths.

A tiny model whose vision tower is never deeper than its decoder hides bugs a real checkpoint shows
on page one (the 27-layer SigLIP tower of ColPali taken for its 18-layer decoder). The builders here
keep the **layout** of each supported checkpoint and shrink only the widths:

- the number of decoder layers and of vision blocks,
- the decoder's query-heads : KV-heads ratio (the real head counts; only ``head_dim`` is tiny),
- the image token ids and vocabulary size, and the page and query templates of the processor.

The vision towers' head count is not part of that layout (``vision_heads``, default 2: sixteen heads
of width 2 cost CPU time and test nothing more). Every value is passed explicitly: transformers' config defaults are not the checkpoints' values
(``PaliGemmaConfig()`` has image token 256000 and image size 224; ``Qwen2VLConfig()`` is the 7B).
Sources for each number: `docs/checkpoints.md` (§1 config values, §2 module tree,
§3 page layouts), which cites transformers 5.24's conversion scripts, fastembed's ColPali token ids,
colpali-engine and a copy of Jina v4's remote code. Weights are random: these models measure
structure and cost, never retrieval quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn


@dataclass(frozen=True)
class CheckpointLayout:
    """The structure of one published checkpoint (docs/checkpoints.md §1)."""

    checkpoint: str
    text_layers: int
    heads: int
    kv_heads: int
    head_dim: int                 # the real one; the tiny builders use a smaller one
    hidden: int
    vision_blocks: int
    vision_heads: int
    image_token_id: int
    vocab_size: int


COLPALI_V1_3 = CheckpointLayout("vidore/colpali-v1.3-hf", text_layers=18, heads=8, kv_heads=1, head_dim=256,
                                hidden=2048, vision_blocks=27, vision_heads=16, image_token_id=257152,
                                vocab_size=257216)
COLQWEN2_V1_0 = CheckpointLayout("vidore/colqwen2-v1.0-hf", text_layers=28, heads=12, kv_heads=2, head_dim=128,
                                 hidden=1536, vision_blocks=32, vision_heads=16, image_token_id=151655,
                                 vocab_size=151936)
JINA_V4 = CheckpointLayout("jinaai/jina-embeddings-v4", text_layers=36, heads=16, kv_heads=2, head_dim=128,
                           hidden=2048, vision_blocks=32, vision_heads=16, image_token_id=151655,
                           vocab_size=151936)
COLQWEN2_5_V0_2 = CheckpointLayout("vidore/colqwen2.5-v0.2", text_layers=36, heads=16, kv_heads=2, head_dim=128,
                                   hidden=2048, vision_blocks=32, vision_heads=16, image_token_id=151655,
                                   vocab_size=151936)

# ColPali page ids (fastembed colpali.py @acec3127, docs/checkpoints.md §3): 1024 x <image>, then
# "<bos>Describe the image.\n" = [2, 50721, 573, 2416, 235265, 108] -> 1030 positions.
GEMMA_SPECIALS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
GEMMA_PIECES = {"Describe": 50721, "▁the": 573, "▁image": 2416, ".": 235265, "\n": 108}
PALIGEMMA_BASE_VOCAB = 257152          # Gemma 256000 + 1024 <loc> + 128 <seg>; <image> is the next id
COLPALI_PAGE_SUFFIX = [2, 50721, 573, 2416, 235265, 108]
COLPALI_IMAGE_TOKENS = 1024            # (448 / 14)^2
# Qwen2-VL / Qwen2.5-VL special ids (docs/checkpoints.md §1): image pad, vision start / end; the chat
# ids are those of the Qwen2 tokenizer's added tokens (151643 endoftext, 151644 im_start, 151645 im_end).
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_FIRST_SPECIAL = 151643
COLQWEN_MAX_PIXELS = 768 * 28 * 28     # both v1.0 and v0.2 were trained with 768 image patches per page (CE README)


def gemma_tokenizer_real_ids():
    """A Gemma tokenizer whose vocabulary puts the page-template pieces at the real ids.

    Vocabulary of 257,152 entries (the PaliGemma tokenizer's size) plus ``<image>`` = 257152; merges
    build "Describe", "▁the", "▁image" from characters, so "<bos>Describe the image.\\n" tokenises to
    the real ``[2, 50721, 573, 2416, 235265, 108]``. Other text falls back to single characters.
    """
    import string

    from transformers import GemmaTokenizer

    vocab: dict[str, int] = dict(GEMMA_SPECIALS)
    vocab.update(GEMMA_PIECES)
    # PaliGemma's 1024 <locNNNN> and 128 <segNNN> tokens follow Gemma's 256000 (the processor adds them if absent)
    vocab.update({f"<loc{i:0>4}>": 256000 + i for i in range(1024)})
    vocab.update({f"<seg{i:0>3}>": 257024 + i for i in range(128)})
    taken = set(vocab.values())
    free = (i for i in range(5, 256000) if i not in taken)
    merges: list[tuple[str, str]] = []
    for ch in ["▁", *string.ascii_letters, *string.digits, *string.punctuation]:
        if ch not in vocab:
            vocab[ch] = next(free)
    for piece in [p for p in GEMMA_PIECES if len(p) > 1]:
        left = piece[0]
        for ch in piece[1:]:
            merged = left + ch
            if merged not in vocab:
                vocab[merged] = next(free)
            merges.append((left, ch))
            left = merged
    used = set(vocab.values())
    for i in range(PALIGEMMA_BASE_VOCAB):
        if i not in used:
            vocab[f"<unused{i}>"] = i
    tok = GemmaTokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def qwen2_tokenizer_real_ids():
    """A byte-level Qwen2 tokenizer with the Qwen2 special tokens at their real ids (151643...)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for i in range(len(vocab), QWEN_FIRST_SPECIAL):
        vocab[f"<|filler{i}|>"] = i
    for j, s in enumerate(QWEN_SPECIALS):
        vocab[s] = QWEN_FIRST_SPECIAL + j
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    return tok


def _mrope(head_dim: int) -> list[int]:
    """An mrope split of ``head_dim / 2`` in the real [16, 24, 24] proportions (2 : 3 : 3 of 8 parts)."""
    half = head_dim // 2
    t, h = half * 2 // 8, half * 3 // 8
    return [half - 2 * h, h, h] if t == 0 else [t, h, half - t - h]


def colpali_v1_3(head_dim: int = 4, vision_hidden: int = 32, vision_heads: int = 2, embedding_dim: int = 16,
                 seed: int = 0):
    """``(ColPaliForRetrieval, ColPaliProcessor)`` with ColPali v1.3's layout: 18 decoder layers (8 heads /
    1 KV head), a 27-layer SigLIP tower at 448 px / patch 14 (1024 image tokens), ``<image>`` = 257152,
    vocabulary 257216, the processor's own page and query templates."""
    from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor, PaliGemmaConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    lay = COLPALI_V1_3
    tok = gemma_tokenizer_real_ids()
    ip = SiglipImageProcessorPil(size={"height": 448, "width": 448})
    ip.image_seq_length = COLPALI_IMAGE_TOKENS
    proc = ColPaliProcessor(image_processor=ip, tokenizer=tok)
    hidden = lay.heads * head_dim
    vlm = PaliGemmaConfig(
        vision_config=dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_hidden_layers=lay.vision_blocks, num_attention_heads=vision_heads,
                           image_size=448, patch_size=14, projection_dim=hidden, vision_use_head=False),
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=lay.text_layers,
                         num_attention_heads=lay.heads, num_key_value_heads=lay.kv_heads, head_dim=head_dim,
                         vocab_size=lay.vocab_size, hidden_activation="gelu_pytorch_tanh",
                         max_position_embeddings=8192, pad_token_id=0, bos_token_id=2, eos_token_id=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        image_token_index=lay.image_token_id, vocab_size=lay.vocab_size, projection_dim=hidden, hidden_size=hidden,
        pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm, embedding_dim=embedding_dim)).eval()
    return model, proc


def _qwen_ids(tok) -> dict[str, int]:
    return {k: tok.convert_tokens_to_ids(k) for k in ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>"]}


def _qwen_image_processor(max_pixels: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=14, merge_size=2,
                                    temporal_patch_size=2)


def _qwen_text(lay: CheckpointLayout, head_dim: int, rope_theta: float, max_pos: int) -> dict:
    hidden = lay.heads * head_dim
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=lay.text_layers,
                num_attention_heads=lay.heads, num_key_value_heads=lay.kv_heads, vocab_size=lay.vocab_size,
                max_position_embeddings=max_pos, bos_token_id=QWEN_FIRST_SPECIAL, eos_token_id=QWEN_FIRST_SPECIAL,
                rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": _mrope(head_dim)})


def colqwen2_v1_0(head_dim: int = 8, vision_hidden: int = 64, vision_heads: int = 2, embedding_dim: int = 16,
                  max_pixels: int = COLQWEN_MAX_PIXELS, seed: int = 0):
    """``(ColQwen2ForRetrieval, ColQwen2Processor)`` with ColQwen2 v1.0's layout: 28 decoder layers (12 heads /
    2 KV heads), a 32-block Qwen2-VL ViT (patch 14, merge 2), ``<|image_pad|>`` = 151655, the trained
    ``max_pixels`` = 768 * 28^2."""
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, Qwen2VLConfig

    lay = COLQWEN2_V1_0
    tok = qwen2_tokenizer_real_ids()
    proc = ColQwen2Processor(image_processor=_qwen_image_processor(max_pixels), tokenizer=tok)
    ids = _qwen_ids(tok)
    text = _qwen_text(lay, head_dim, 1e6, 32768)
    vlm = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=lay.vision_blocks, embed_dim=vision_hidden, hidden_size=text["hidden_size"],
                           num_heads=vision_heads, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm, embedding_dim=embedding_dim)).eval()
    return model, proc


def qwen2_5_vl_config(lay: CheckpointLayout, head_dim: int = 8, vision_hidden: int = 64, vision_heads: int = 2):
    """A Qwen2.5-VL-3B-layout config (Jina v4's and ColQwen2.5's base): 36 layers (16 / 2 heads), a 32-block
    ViT with windowed attention (window 112, full attention in blocks 7, 15, 23, 31)."""
    from transformers import Qwen2_5_VLConfig

    tok_ids = {s: QWEN_FIRST_SPECIAL + j for j, s in enumerate(QWEN_SPECIALS)}
    text = _qwen_text(lay, head_dim, 1e6, 128000)
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=lay.vision_blocks, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_heads=vision_heads, out_hidden_size=text["hidden_size"], patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        image_token_id=tok_ids["<|image_pad|>"], video_token_id=tok_ids["<|video_pad|>"],
        vision_start_token_id=tok_ids["<|vision_start|>"], vision_end_token_id=tok_ids["<|vision_end|>"],
    )


# ------------------------------------------------------------------------------------------ Jina v4
def _jina_model_class():
    from transformers import Qwen2_5_VLForConditionalGeneration

    class JinaEmbeddingsV4Double(Qwen2_5_VLForConditionalGeneration):
        """The remote code's ``JinaEmbeddingsV4Model`` layout (SmartEmbed copy of modeling_jina_embeddings_v4.py
        @567ec803): a ``Qwen2_5_VLForConditionalGeneration`` subclass (``self.model`` = the VL model),
        ``get_decoder()`` returning that whole VL model (as the vendored Qwen2.5-VL code does,
        docs/checkpoints.md §2), a ``multi_vector_projector`` and ``forward(task_label, ...)`` that unpads
        ``pixel_values`` and returns ``multi_vec_emb = normalize(proj(last hidden)) * mask``.
        The task LoRA adapters are not modelled (``task_label`` is accepted and unused)."""

        def __init__(self, config, dim: int = 16) -> None:
            super().__init__(config)
            config.multi_vector_projector_dim = dim
            self.multi_vector_projector = nn.Linear(config.text_config.hidden_size, dim)

        def get_decoder(self):
            return self.model

        def forward(self, task_label, input_ids, attention_mask, **kwargs):
            if "pixel_values" in kwargs:
                sizes = kwargs["image_grid_thw"][:, 1] * kwargs["image_grid_thw"][:, 2]
                kwargs["pixel_values"] = torch.cat([pv[:n] for pv, n in zip(kwargs["pixel_values"], sizes,
                                                                            strict=True)])
            hidden = super().forward(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                     use_cache=False, **kwargs).hidden_states[-1]           # [B, S, h]
            emb = nn.functional.normalize(self.multi_vector_projector(hidden), dim=-1)
            return SimpleNamespace(multi_vec_emb=emb * attention_mask.unsqueeze(-1))

    return JinaEmbeddingsV4Double


class PeftShapedWrapper(nn.Module):
    """The attribute layout a PEFT ``PeftModel`` adds around a model (``peft.base_model.model`` is the wrapped
    model, ``get_base_model()`` returns it; Jina's ``from_pretrained`` wraps its model so, JV4 and
    docs/checkpoints.md §2). peft itself is not installed here; only the layout is modelled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = model

    def get_base_model(self) -> nn.Module:
        return self.base_model.model

    @property
    def config(self):
        return self.base_model.model.config

    def forward(self, *args, **kwargs):
        return self.base_model.model(*args, **kwargs)


def jina_v4(head_dim: int = 8, vision_hidden: int = 64, dim: int = 16, max_pixels: int = 112 * 112,
            peft: bool = False, seed: int = 0):
    """``(model, processor)`` with Jina v4's layout (36 layers, 16 / 2 heads, 32 ViT blocks) and the model card's
    processor calls (``tiny.JinaStandInProcessor``, its document template). ``peft=True`` wraps the model in
    a PEFT-shaped wrapper as ``from_pretrained`` does."""
    from anchorprune.backbones.tiny import JinaStandInProcessor

    torch.manual_seed(seed)
    model = _jina_model_class()(qwen2_5_vl_config(JINA_V4, head_dim, vision_hidden), dim).eval()
    proc = JinaStandInProcessor(_qwen_image_processor(max_pixels), qwen2_tokenizer_real_ids())
    return (PeftShapedWrapper(model).eval() if peft else model), proc


# ------------------------------------------------------------------------------ ColQwen2.5 (colpali-engine)
def _colqwen2_5_class():
    from transformers import Qwen2_5_VLModel

    class ColQwen2_5Double(Qwen2_5_VLModel):  # noqa: N801 - the name of the class it stands for
        """colpali-engine's ``ColQwen2_5`` (modeling_colqwen2_5.py @080d4c33): a ``Qwen2_5_VLModel`` subclass
        (so its decoder is ``self.language_model``) with ``custom_text_proj`` and a forward that unpads
        ``pixel_values`` and returns ``normalize(proj(last hidden)) * attention_mask``."""

        def __init__(self, config, dim: int = 16) -> None:
            super().__init__(config)
            self.dim = dim
            self.custom_text_proj = nn.Linear(config.text_config.hidden_size, dim)

        def forward(self, *args, **kwargs):
            if "pixel_values" in kwargs:
                offsets = kwargs["image_grid_thw"][:, 1] * kwargs["image_grid_thw"][:, 2]
                kwargs["pixel_values"] = torch.cat([p[:o] for p, o in zip(kwargs["pixel_values"], offsets,
                                                                          strict=True)])
            last = super().forward(*args, **kwargs, use_cache=False, return_dict=True).last_hidden_state
            proj = self.custom_text_proj(last)                                              # [B, S, dim]
            proj = proj / proj.norm(dim=-1, keepdim=True)
            return proj * kwargs["attention_mask"].unsqueeze(-1)

    return ColQwen2_5Double


class ColQwen2_5ProcessorDouble:  # noqa: N801
    """colpali-engine's ``ColQwen2_5_Processor`` calls (processing_colqwen2_5.py @0e5e107a): the page prompt
    ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|><|endoftext|>``,
    left padding, per-image padded ``pixel_values``; queries ``"Query: " + q + "<|endoftext|>" * 10``."""

    visual_prompt_prefix = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image."
                            "<|im_end|><|endoftext|>")
    query_prefix = "Query: "
    query_augmentation_token = "<|endoftext|>"

    def __init__(self, image_processor, tokenizer) -> None:
        from transformers import ColQwen2Processor

        tokenizer.padding_side = "left"
        # transformers' ColQwen2Processor expands the same page prompt (docs/checkpoints.md §3)
        self.inner = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                       visual_prompt_prefix=self.visual_prompt_prefix)
        self.tokenizer = tokenizer

    def process_images(self, images: list) -> dict:
        batch = dict(self.inner(images=[im.convert("RGB") for im in images], return_tensors="pt"))
        pv = batch["pixel_values"]
        if pv.dim() == 2:                                                   # [sum n_i, p] -> [B, max n_i, p]
            offsets = batch["image_grid_thw"][:, 1] * batch["image_grid_thw"][:, 2]
            batch["pixel_values"] = nn.utils.rnn.pad_sequence(list(torch.split(pv, offsets.tolist())),
                                                              batch_first=True)
        return batch

    def process_queries(self, queries: list[str]) -> dict:
        texts = [self.query_prefix + q + self.query_augmentation_token * 10 for q in queries]
        return dict(self.tokenizer(texts, return_tensors="pt", padding="longest"))


def colqwen2_5_v0_2(head_dim: int = 8, vision_hidden: int = 64, dim: int = 16, max_pixels: int = COLQWEN_MAX_PIXELS,
                    seed: int = 0):
    """``(model, processor)`` doubles of colpali-engine's ColQwen2.5 with the Qwen2.5-VL-3B layout (36 layers)."""
    torch.manual_seed(seed)
    model = _colqwen2_5_class()(qwen2_5_vl_config(COLQWEN2_5_V0_2, head_dim, vision_hidden), dim).eval()
    return model, ColQwen2_5ProcessorDouble(_qwen_image_processor(max_pixels), qwen2_tokenizer_real_ids())
