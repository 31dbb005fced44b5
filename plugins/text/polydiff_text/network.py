"""The text denoiser: a bidirectional transformer over the sentence's tokens and the MR's attributes.

One file, one dataclass config. The meaning representation enters as eight prefix tokens (one per E2E
attribute, its value embedded; -1, the dropped condition of classifier-free guidance, has an embedding of
its own per attribute) that every sentence position attends to; padding positions are masked out of the
attention. Two heads, by method:

* ``masked`` (MDLM): tokens (the mask id = ``vocab`` included) in, class logits out; the network reads no
  noise level (``level_free``), as MDLM found unnecessary for masked text;
* ``embedding`` (Diffusion-LM): noisy word embeddings in (``x`` of shape [B, L, dim], with the noise level
  ``c_noise = log(sigma) / 4`` through a Fourier embedding), clean-embedding estimates out; the word embedding
  table is the network's own (:meth:`TextTransformer.embed`), trained with the denoiser, and its rounding logits
  are minus the squared distances to the words (:meth:`TextTransformer.round_logits`). Two output heads:
  ``embed_head="regress"`` (Diffusion-LM) outputs the estimate directly; ``embed_head="interpolate"`` (CDCD's
  score interpolation, Dieleman et al. 2022) outputs logits over the vocabulary (``forward(..., logits=True)``),
  and the estimate is the probability-weighted mean of the word embeddings, which are then kept at a fixed
  norm (``embed_norm``: each word's vector scaled to length sqrt(embed_dim), unit variance per dimension).
  With ``self_cond`` the network also reads the previous estimate of the clean embeddings
  (``forward(..., self_cond=x0_prev)``, zeros when absent; Chen et al. 2022's self-conditioning).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

import torch
from torch import nn

__all__ = ["TextConfig", "TextTransformer"]

#: sentences per group of similar length in a large batch (see :meth:`TextTransformer._by_length`)
BUCKET = 32


@dataclass
class TextConfig:
    vocab: int = 1000
    max_len: int = 48
    mr_values: List[int] = field(default_factory=lambda: [2] * 8)  # values per attribute, 0 (absent) included
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp: int = 4
    dropout: float = 0.1
    method: str = "masked"       # masked | embedding
    embed_dim: int = 16          # embedding method: the diffused word-embedding size (Diffusion-LM: 16)
    embed_head: str = "regress"  # embedding method: regress (the estimate) | interpolate (logits, CDCD)
    embed_norm: bool = False     # embedding method: word vectors kept at length sqrt(embed_dim)
    self_cond: bool = False      # embedding method: the network also reads the previous estimate
    placeholders: List[List[int]] = field(default_factory=list)  # token ids of <name> and of <near>, each spacing

    @classmethod
    def from_dict(cls, d: dict) -> "TextConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown text network settings: {', '.join(unknown)}")
        return cls(**d)


class TextTransformer(nn.Module):
    #: ``forward(..., select=positions)`` computes the output head on the selected positions only
    selects = True

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.method not in ("masked", "embedding"):
            raise ValueError(f"unknown text method {cfg.method!r}; known: masked, embedding")
        if cfg.embed_head not in ("regress", "interpolate"):
            raise ValueError(f"unknown embedding head {cfg.embed_head!r}; known: regress, interpolate")
        self.cfg = cfg
        d = cfg.dim
        self.mr_embed = nn.ModuleList(nn.Embedding(n + 1, d) for n in cfg.mr_values)  # index 0: dropped (-1)
        self.mr_pos = nn.Parameter(torch.zeros(len(cfg.mr_values), d))
        self.pos = nn.Parameter(torch.zeros(cfg.max_len, d))
        if cfg.method == "masked":
            self.tokens = nn.Embedding(cfg.vocab + 1, d)  # + the mask id
        else:
            self.words = nn.Embedding(cfg.vocab, cfg.embed_dim)
            nn.init.normal_(self.words.weight, std=1.0)
            self.inp = nn.Linear(cfg.embed_dim * (2 if cfg.self_cond else 1), d)
            self.level = nn.Sequential(nn.Linear(64, d), nn.SiLU(), nn.Linear(d, d))
            self.register_buffer("freqs", torch.randn(32) * 4.0, persistent=True)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.mlp * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        logits = cfg.method == "masked" or cfg.embed_head == "interpolate"
        self.out = nn.Linear(d, cfg.vocab if logits else cfg.embed_dim)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.mr_pos, std=0.02)

    @classmethod
    def from_config(cls, config: dict) -> "TextTransformer":
        return cls(TextConfig.from_dict(dict(config or {})))

    def _mr(self, mr: Optional[torch.Tensor], b: int, device) -> torch.Tensor:
        if mr is None:
            mr = torch.full((b, len(self.mr_embed)), -1, dtype=torch.long, device=device)
        mr = mr.long().expand(b, -1)
        parts = [emb((mr[:, j] + 1).clamp(0, emb.num_embeddings - 1)) for j, emb in enumerate(self.mr_embed)]
        return torch.stack(parts, 1) + self.mr_pos

    def forward(self, x: torch.Tensor, level: torch.Tensor, mask: Optional[torch.Tensor] = None,
                mr: Optional[torch.Tensor] = None, select: Optional[torch.Tensor] = None,
                self_cond: Optional[torch.Tensor] = None, logits: bool = False, **_) -> torch.Tensor:
        """Outputs for every position ([B, L, vocab] or [B, L, embed_dim]; padding positions 0), or with
        ``select`` (bool, [B, L]) only for the selected positions, [N, vocab] in row-major order: the output
        head, the costliest layer per position, then runs on those alone (a sampler needs the masked ones).
        Embedding method: ``self_cond``, the previous estimate [B, L, embed_dim] (with ``self_cond`` in the
        config); ``logits``: the interpolating head's logits [B, L, vocab] instead of the estimate."""
        b, n = x.shape[0], x.shape[1]
        if self.cfg.method == "embedding" and self.cfg.self_cond:
            x = torch.cat([x, torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype)], -1)
        valid = None if mask is None else mask.reshape(b, -1)[:, :n].bool()
        h = self._hidden(x, level, valid, mr)  # [B, used, dim]; positions from `used` on are padding
        used = h.shape[1]
        if select is not None:
            sel = select.reshape(b, -1)[:, :n].bool()
            if valid is not None and bool((sel & ~valid).any()):
                raise ValueError("selected positions must lie inside the sentences (not in the padding)")
            sel = sel[:, :used]
            out = self.out(self.norm(h[sel]))
            rows = sel.nonzero()[:, 0]
        else:
            out = self.out(self.norm(h))
            if valid is not None and b > 2 * BUCKET:  # grouped pass: padding inside `used` gives 0, as trimmed
                out = out.masked_fill(~valid[:, :used].unsqueeze(-1), 0.0)
            if used < n:  # positions after the batch's longest sentence are padding: 0
                out = torch.cat([out, out.new_zeros((b, n - used) + tuple(out.shape[2:]))], 1)
            rows = None
        if self.cfg.method == "masked":  # <pad> (id 0) only ever follows the sentence: never predicted
            out[..., 0] = -1e4  # (the head's output is not kept for its backward pass: safe in place)
            out = self._ban_missing_names(out, mr, b, rows)
        elif self.cfg.embed_head == "interpolate" and not logits:
            out = torch.softmax(out.float(), -1) @ self.table()
        return out

    def _hidden(self, x, level, valid, mr) -> torch.Tensor:
        """The last block's states of the sentence positions, [B, used, dim], cut after the batch's longest
        sentence (``valid``: bool [B, L], or None for full-length sentences)."""
        b, n = x.shape[0], x.shape[1]
        if valid is not None:
            lens = valid.sum(1)
            if b > 2 * BUCKET:  # sentences of similar length together, each group cut to its longest
                return self._by_length(x, level, valid, mr, lens)
            used = int(lens.max().item()) if b else n
            if 0 < used < n:  # positions after the batch's longest sentence are padding: leave them out
                x, valid, n = x[:, :used], valid[:, :used], used
        if self.cfg.method == "masked":
            h = self.tokens(x.long())
        else:
            h = self.inp(x)
            f = level.float().reshape(-1, 1) * self.freqs[None] * 2 * math.pi  # level: c_noise = log(sigma) / 4
            h = h + self.level(torch.cat([f.sin(), f.cos()], -1)).unsqueeze(1)
        h = h + self.pos[:n]
        h = torch.cat([self._mr(mr, b, x.device), h], 1)
        pad = None
        if valid is not None:
            pad = torch.cat([torch.zeros(b, len(self.mr_embed), dtype=torch.bool, device=x.device), ~valid], 1)
        return self.blocks(h, src_key_padding_mask=pad)[:, len(self.mr_embed):]

    def _by_length(self, x, level, valid, mr, lens) -> torch.Tensor:
        """The blocks in groups of :data:`BUCKET` sentences sorted by length: a batch of mixed lengths
        computes about its real tokens instead of every sentence padded to the longest (each row's result
        is its own; only the float rounding of the grouping differs). Returns [B, used, dim], zeros after
        each group's longest sentence."""
        b = x.shape[0]
        order = torch.argsort(lens, stable=True)
        longest = max(int(lens.max().item()), 1)
        out = None
        for idx in order.split(BUCKET):
            used = max(int(lens[idx].max().item()), 1)
            lv = level[idx] if level.dim() and level.shape[0] == b else level
            mr_i = mr[idx] if mr is not None and mr.dim() and mr.shape[0] == b else mr
            part = self._hidden(x[idx, :used], lv, valid[idx, :used], mr_i)
            if out is None:
                out = part.new_zeros((b, longest, part.shape[-1]))
            out[idx, :part.shape[1]] = part
        return out

    def _ban_missing_names(self, out: torch.Tensor, mr: Optional[torch.Tensor], b: int,
                           rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A placeholder (<name>, <near>) is never predicted for an MR that lacks the attribute (value 0);
        without an MR (-1) the names are drawn at decoding, so it may be. ``rows``: the sentence of each
        output row, when the output holds selected positions only ([N, vocab])."""
        if mr is None or not self.cfg.placeholders:
            return out
        mr = mr.long().expand(b, -1)
        for slot, toks in zip((0, len(self.mr_embed) - 1), self.cfg.placeholders):  # name, near
            absent = (mr[:, slot] == 0).reshape(b, 1) if rows is None else (mr[rows, slot] == 0)
            for tok in toks:
                out[..., tok].masked_fill_(absent, -1e4)  # a column view, filled in place
        return out

    def table(self) -> torch.Tensor:
        """Embedding method: the word embeddings [vocab, embed_dim] (with ``embed_norm``, each of length
        sqrt(embed_dim))."""
        w = self.words.weight
        if self.cfg.embed_norm:
            w = w * (math.sqrt(w.shape[1]) / w.norm(dim=1, keepdim=True).clamp_min(1e-6))
        return w

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding method: the embeddings of ``tokens`` [...] -> [..., embed_dim]."""
        return nn.functional.embedding(tokens.long(), self.table())

    def round_logits(self, x0: torch.Tensor) -> torch.Tensor:
        """Embedding method: logits of each word for clean-embedding estimates ``x0`` [..., embed_dim]
        (negative squared distance to each word's embedding)."""
        w = self.table()
        return -(x0.pow(2).sum(-1, keepdim=True) - 2 * x0 @ w.T + w.pow(2).sum(-1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "embed.weight"  # the word table's earlier name
        if old in state_dict and prefix + "words.weight" not in state_dict:
            state_dict[prefix + "words.weight"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def config_dict(self) -> dict:
        return asdict(self.cfg)
