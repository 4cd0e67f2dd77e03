"""SAP statistics inside one forward pass, without materialising attention maps (docs/method.md §2, "Decision").

Each captured decoder layer's ``self_attn`` gets a shallow copy of its config whose attention
implementation is :data:`CAPTURE_KEY`, a function registered with transformers'
``AttentionInterface``. It returns the stock SDPA output (so the final embeddings are the same
as a plain SDPA forward) and, beside it, recomputes the post-softmax probabilities of the visual
query rows in chunks of ``chunk_rows`` rows, reducing them at once to

- ``centrality[b, j] = mean_h sum_{i in V} A[b, h, i, j]`` (in-degree from visual sources), and
- ``eos[b, j] = mean_h A[b, h, last, j]`` (the row of the last valid token),

accumulated in float32. No more than one chunk of one layer's map is alive at a time; layers
outside the capture keep SDPA. Recipe and pitfalls: `docs/method.md` (§2, capture).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

CAPTURE_KEY = "anchorprune_capture"
_STATE_ATTR = "_anchorprune_capture"


@dataclass
class CaptureState:
    """What the capture function needs per batch, and what it produces per layer."""

    visual: torch.Tensor                       # [B, S] bool, visual token positions
    last: torch.Tensor                         # [B] int64, last valid position per row
    chunk_rows: int = 256
    centrality: dict[int, torch.Tensor] = field(default_factory=dict)   # layer -> [B, S] float32
    eos: dict[int, torch.Tensor] = field(default_factory=dict)          # layer -> [B, S] float32


def _masked_scores(
    scores: torch.Tensor,           # [H, r, Sk] float32
    mask: torch.Tensor | None,      # [B|1, 1|H, S, Sk] bool (True = attend) or float (additive), or None
    b: int,
    rows: torch.Tensor,             # [r] query positions
    causal: bool,
) -> torch.Tensor:
    neg = torch.finfo(scores.dtype).min
    if mask is not None:
        m = mask[min(b, mask.shape[0] - 1)][:, rows, : scores.shape[-1]]  # [1|H, r, Sk]
        if m.dtype == torch.bool:
            return scores if bool(m.all()) else scores.masked_fill_(~m, neg)   # bidirectional prefix: no fill
        return scores.add_(m.to(scores.dtype))
    if causal:
        cols = torch.arange(scores.shape[-1], device=scores.device)
        return scores.masked_fill_(cols[None, None, :] > rows[None, :, None], neg)
    return scores


def reduce_attention(
    query: torch.Tensor,            # [B, H, S, D]
    key: torch.Tensor,              # [B, Hkv, Sk, D]
    attention_mask: torch.Tensor | None,
    scaling: float,
    causal: bool,
    visual: torch.Tensor,           # [B, S] bool
    last: torch.Tensor,             # [B] int64
    chunk_rows: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centrality [B, Sk], eos [B, Sk])`` float32, one row chunk of probabilities at a time."""
    bsz, heads, _, dim = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    rep = heads // hkv                                                    # GQA: query heads per KV head
    cent = torch.zeros(bsz, sk, dtype=torch.float32, device=query.device)
    eos = torch.zeros(bsz, sk, dtype=torch.float32, device=query.device)

    def probs(b: int, rows: torch.Tensor) -> torch.Tensor:               # [H, r, Sk] float32
        q = (query[b][:, rows].float() * scaling).reshape(hkv, rep * len(rows), dim)   # heads grouped by KV head
        scores = torch.matmul(q, kt[b]).view(heads, len(rows), sk)
        return torch.softmax(_masked_scores(scores, attention_mask, b, rows, causal), dim=-1)

    kt = [key[b].float().transpose(-1, -2) for b in range(bsz)]          # [Hkv, D, Sk] each, no repeat
    for b in range(bsz):
        vis_rows = torch.nonzero(visual[b], as_tuple=False).flatten()     # [N]
        for rows in vis_rows.split(chunk_rows):
            cent[b] += probs(b, rows).sum(dim=(0, 1))                     # sum_{h,i} A[h, i, :]
        eos[b] = probs(b, last[b].reshape(1))[:, 0].mean(dim=0)
    cent /= heads
    return cent, eos


def capture_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None,
                              dropout: float = 0.0, **kwargs):
    """Stock SDPA output; the layer's SAP statistics go into the module's :class:`CaptureState`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                 **kwargs)
    hook = getattr(module, _STATE_ATTR, None)
    if hook is not None:
        state, layer = hook
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        causal = query.shape[2] > 1 and attention_mask is None and bool(is_causal)
        with torch.no_grad():
            c, e = reduce_attention(query, key, attention_mask, scale, causal, state.visual, state.last,
                                    state.chunk_rows)
        state.centrality[layer], state.eos[layer] = c, e
    return out


def register() -> None:
    """Register :data:`CAPTURE_KEY` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE_KEY, capture_attention_forward)


#: where the language model's decoder layers live, relative to the model (after unwrapping PEFT), tried in
#: order after ``get_decoder()``. Layouts from docs/checkpoints.md §2 (transformers 5.24 [V],
#: earlier 5.x [S], Jina v4 remote code, colpali-engine).
DECODER_PATHS: tuple[str, ...] = (
    "vlm.language_model.layers",            # ColPali/ColQwen2ForRetrieval, 5.24 (vlm = AutoModel)
    "vlm.model.language_model.layers",      # same, earlier 5.x (vlm = AutoModelForImageTextToText)
    "model.language_model.layers",          # *ForConditionalGeneration 5.x; Jina v4 (self.model = Qwen2_5_VLModel)
    "model.model.language_model.layers",    # colpali-engine ColPali (self.model = PaliGemmaForConditionalGeneration)
    "language_model.layers",                # Qwen2_5_VLModel / PaliGemmaModel; colpali-engine ColQwen2 / ColQwen2_5
    "model.layers",                         # a bare *ForCausalLM
    "layers",                               # a bare text model (GemmaModel, Qwen2VLTextModel)
)


class DecoderLayersError(ValueError):
    """The language model's decoder layers cannot be found, or their count disagrees with the text config."""


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The wrapped model under PEFT wrappers (``PeftModel.get_base_model()`` = ``base_model.model``)."""
    seen = {id(model)}
    while callable(getattr(model, "get_base_model", None)):
        inner = model.get_base_model()
        if id(inner) in seen:
            break
        seen.add(id(inner))
        model = inner
    return model


def text_num_layers(model: nn.Module) -> int | None:
    """``num_hidden_layers`` of the model's text (decoder) config, or None when the config names none.

    ``ColPaliConfig`` keeps the VLM config under ``vlm_config``; composite configs keep it under
    ``text_config`` (``get_text_config(decoder=True)``).
    """
    cfg = getattr(unwrap_peft(model), "config", None)
    cfg = getattr(cfg, "vlm_config", None) or cfg
    if cfg is None:
        return None
    get = getattr(cfg, "get_text_config", None)
    text = get(decoder=True) if callable(get) else getattr(cfg, "text_config", cfg)
    n = getattr(text, "num_hidden_layers", None)
    return int(n) if n is not None else None


def _attr_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_decoder_list(mod) -> bool:
    return isinstance(mod, nn.ModuleList) and len(mod) > 0 and all(hasattr(m, "self_attn") for m in mod)


def _via_get_decoder(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """``get_decoder()``, descending into ``.language_model`` where it returns the whole VL model (Jina v4)."""
    get = getattr(model, "get_decoder", None)
    if not callable(get):
        return None
    try:
        dec = get()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    for where, mod in (("get_decoder().layers", getattr(dec, "layers", None)),
                       ("get_decoder().language_model.layers", _attr_path(dec, "language_model.layers"))):
        if _is_decoder_list(mod):
            return where, mod
    return None


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, found through the model's own structure (never by size).

    ``get_decoder()`` first, then :data:`DECODER_PATHS`, after unwrapping PEFT. The count must equal
    the text config's ``num_hidden_layers``: a vision tower (27 SigLIP layers in ColPali, 32 Qwen ViT
    blocks) is never taken for the decoder.
    """
    inner = unwrap_peft(model)
    name = type(model).__name__ + (f" (wrapping {type(inner).__name__})" if inner is not model else "")
    expected = text_num_layers(model)
    found = _via_get_decoder(inner)
    if found is None:
        for path in DECODER_PATHS:
            mod = _attr_path(inner, path)
            if _is_decoder_list(mod):
                found = (path, mod)
                break
    if found is None:
        raise DecoderLayersError(
            f"{name}: no decoder layers with `self_attn` at get_decoder() or {list(DECODER_PATHS)}; "
            "this model layout is not supported (add its path to capture.DECODER_PATHS)")
    where, layers = found
    if expected is None:
        raise DecoderLayersError(f"{name}: its config names no text `num_hidden_layers` to check the "
                                 f"{len(layers)} layers at {where} against; pass a model with its HF config")
    if len(layers) != expected:
        raise DecoderLayersError(f"{name}: {len(layers)} layers at {where} but the text config says "
                                 f"num_hidden_layers={expected}; the model and its config disagree")
    return layers


@contextlib.contextmanager
def capturing(model: nn.Module, layers: Sequence[int], state: CaptureState) -> Iterator[CaptureState]:
    """Install the capture on ``layers`` for the duration of the block, then restore every config."""
    register()
    decoder = find_decoder_layers(model)
    saved: list[tuple[nn.Module, object]] = []
    try:
        for layer in layers:
            attn = decoder[layer].self_attn
            saved.append((attn, attn.config))
            cfg = copy.copy(attn.config)              # per-layer copy: the shared config stays SDPA
            cfg._attn_implementation_internal = CAPTURE_KEY
            attn.config = cfg
            setattr(attn, _STATE_ATTR, (state, layer))
        yield state
    finally:
        for attn, cfg in saved:
            attn.config = cfg
            if hasattr(attn, _STATE_ATTR):
                delattr(attn, _STATE_ATTR)


def last_valid(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the last position with attention_mask == 1 (left or right padding).

    >>> last_valid(torch.tensor([[1, 1, 0], [0, 1, 1]])).tolist()
    [1, 2]
    """
    s = attention_mask.shape[1]
    idx = torch.arange(s, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values
