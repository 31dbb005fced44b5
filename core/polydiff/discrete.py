"""Categorical diffusion: data made of categories (word tokens, atom and bond types) beside sigma-space.

The forward process replaces each token, independently, with probability ``level`` in [0, 1]:

* ``absorbing`` (masked diffusion; Austin et al. 2021, Sahoo et al. 2024 "MDLM"): by a mask state, the
  extra category ``vocab``; a revealed token never changes again on the way back;
* ``uniform``: by a category drawn uniformly from the ``vocab`` ones;
* ``marginal``: by a category drawn from a given prior (the data's frequencies: DiGress' marginal
  transitions, Vignac et al. 2023); with ``groups`` each position draws from its own group's prior (a
  graph's atoms from the atom frequencies, its atom pairs from the bond frequencies).

``level`` plays the part sigma plays for continuous data: a ladder runs from 1 (every token replaced: the
prior) down to 0 (the data), samplers walk it, training draws it, guidance intervals are written in it.
With the linear ladder the keep probability is ``alpha = 1 - level`` (MDLM's log-linear schedule).

The denoiser contract: ``D(x, level, **cond) -> log p(x0 | x)``, float log-probabilities of shape
``x.shape + (vocab,)`` for integer tokens ``x`` (the mask id included for absorbing data); the network
behind it returns class logits and :class:`CategoricalDenoiser` normalises them (for absorbing data, a
revealed token is carried through with probability 1). Log-probabilities combine linearly under
classifier-free guidance exactly as sigma-space estimates do (:func:`polydiff.guidance.cfg_denoiser`).

Samplers are plain functions registered with the continuous ones and marked ``space = "categorical"``:
``fn(D, x, levels, *, cond=None, generator=None, callback=None, keep=None, **options) -> x``, where ``keep``
(bool, shaped like ``x``) marks the positions that must not change (known tokens: infilling, padding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["KINDS", "Process", "process_of", "CategoricalDenoiser", "corrupt", "prior_sample", "posterior",
           "categorical_loss", "sample_levels", "elbo", "ancestral", "confidence", "linear", "SAMPLERS",
           "DEFAULT_SAMPLER", "LADDER_NAME", "power"]

KINDS = ("absorbing", "uniform", "marginal")
NEG = -1e9  # the log-probability of an impossible category (finite, so guidance's lerp stays finite)


@dataclass(frozen=True)
class Process:
    """A categorical forward process over ``vocab`` categories (0 .. vocab - 1).

    ``prior`` (marginal processes): ``vocab`` non-negative weights, or with ``groups`` one such list per
    group, and ``groups`` gives each position (the last dimension of the tokens) its group: position i is
    replaced by a draw from ``prior[groups[i]]``."""

    kind: str
    vocab: int
    prior: Optional[Sequence] = None
    groups: Optional[Sequence[int]] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown categorical process {self.kind!r}; known: {', '.join(KINDS)}")
        if int(self.vocab) < 2:
            raise ValueError(f"a categorical process needs at least 2 categories, got {self.vocab}")
        if self.groups is not None and self.kind != "marginal":
            raise ValueError("per-position groups apply to a marginal process")
        if self.kind == "marginal":
            rows = self.prior if self.groups is not None else [self.prior]
            if self.prior is None or not rows or any(
                    p is None or isinstance(p, (int, float)) or len(p) != int(self.vocab) or min(p) < 0
                    or not sum(p) > 0 for p in rows):
                raise ValueError(f"a marginal process needs a prior of {self.vocab} non-negative weights"
                                 + (" per group" if self.groups is not None else ""))
            if self.groups is not None and (not len(self.groups)
                                            or not all(0 <= int(g) < len(rows) for g in self.groups)):
                raise ValueError(f"every group must be one of the prior's {len(rows)} rows")

    @property
    def mask_id(self) -> int:
        """The mask state of absorbing data (one past the last category)."""
        return int(self.vocab)

    @property
    def states(self) -> int:
        """Values a noisy token can take: the categories, plus the mask for absorbing data."""
        return int(self.vocab) + (self.kind == "absorbing")

    def pi(self, device=None) -> torch.Tensor:
        """The distribution a replaced token is drawn from (uniform or marginal processes), float32 [vocab],
        or [positions, vocab] with ``groups``."""
        if self.kind == "marginal":
            if self.groups is not None:
                p = torch.as_tensor([[float(v) for v in row] for row in self.prior], dtype=torch.float32)
                p = p / p.sum(-1, keepdim=True)
                return p[torch.as_tensor([int(g) for g in self.groups])].to(device)
            p = torch.as_tensor([float(v) for v in self.prior], dtype=torch.float32)
            return (p / p.sum()).to(device)
        return torch.full((int(self.vocab),), 1.0 / int(self.vocab), device=device)

    def to_config(self) -> dict:
        out = {"kind": self.kind, "vocab": int(self.vocab)}
        if self.kind == "marginal":
            if self.groups is not None:
                out["prior"] = [[float(v) for v in row] for row in self.prior]
                out["groups"] = [int(g) for g in self.groups]
            else:
                out["prior"] = [float(v) for v in self.prior]
        return out


def process_of(config: dict) -> Optional[Process]:
    """The categorical process a model config names (``config["process"]``), or None for sigma-space data."""
    spec = (config or {}).get("process")
    if not spec:
        return None
    return Process(spec.get("kind", "absorbing"), int(spec["vocab"]), spec.get("prior"), spec.get("groups"))


def _draw(shape, generator, device) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``generator`` (on its own device), moved to ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def _gumbel_argmax(logp: torch.Tensor, generator, temperature: float = 1.0) -> torch.Tensor:
    """One category per row of ``logp`` (log-probabilities, last dim), drawn with the Gumbel-max trick."""
    if temperature <= 0:
        return logp.argmax(-1)
    u = _draw(logp.shape, generator, logp.device).clamp_(1e-20, 1.0)
    return (logp / temperature - torch.log(-torch.log(u))).argmax(-1)


def _expand_level(level: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return level.reshape((-1,) + (1,) * (like.ndim - 1)).to(like.device, torch.float32)


def prior_sample(proc: Process, shape, generator=None, device="cpu") -> torch.Tensor:
    """Tokens at level 1: all masks (absorbing), else draws from the prior."""
    if proc.kind == "absorbing":
        return torch.full(tuple(shape), proc.mask_id, dtype=torch.long, device=device)
    logp = proc.pi(device).log().expand(tuple(shape) + (int(proc.vocab),))
    return _gumbel_argmax(logp, generator)


def corrupt(proc: Process, x0: torch.Tensor, level: torch.Tensor, generator=None) -> torch.Tensor:
    """Replace each token of ``x0`` with probability ``level`` (one level per item, [batch])."""
    replace = _draw(x0.shape, generator, x0.device) < _expand_level(level, x0)
    return torch.where(replace, prior_sample(proc, x0.shape, generator, x0.device), x0)


class CategoricalDenoiser(nn.Module):
    """``D(x, level, **cond) -> log p(x0 | x)`` around a network returning class logits ``net(x, level, **cond)``
    of shape ``x.shape + (vocab,)``. For absorbing data a revealed token keeps its value (log-probability 0
    for it, :data:`NEG` for the others) and the mask is never predicted. ``level_free``: the network does not
    read the level (MDLM's finding for masked text), so a sampler may reuse an evaluation while the tokens
    do not change."""

    def __init__(self, net: nn.Module, process: Process, level_free: bool = False):
        super().__init__()
        self.net = net
        self.process = process
        self.level_free = bool(level_free)

    def forward(self, x: torch.Tensor, level: torch.Tensor, **cond) -> torch.Tensor:
        select = cond.pop("select", None)
        if select is not None:
            return self._selected(x, level, select.bool(), cond)
        logits = self.net(x, level, **cond)
        if self.process.kind == "absorbing" and not torch.is_grad_enabled():
            return self._absorbing_in_place(x, logits)
        logp = torch.log_softmax(logits.float(), dim=-1)
        if self.process.kind == "absorbing":
            revealed = x != self.process.mask_id
            carry = torch.full_like(logp, NEG).scatter_(-1, x.clamp(max=self.process.vocab - 1).unsqueeze(-1), 0.0)
            logp = torch.where(revealed.unsqueeze(-1), carry, logp)
        return logp

    def _selected(self, x: torch.Tensor, level: torch.Tensor, select: torch.Tensor, cond: dict) -> torch.Tensor:
        """The log-probabilities of the positions ``select`` (bool, shaped like ``x``) only, [N, vocab] in
        row-major order: a sampler that reads the masked positions alone asks for those. A network whose
        ``selects`` attribute is true computes its output head on them alone; any other is indexed."""
        if getattr(self.net, "selects", False):
            logits = self.net(x, level, select=select, **cond)
        else:
            logits = self.net(x, level, **cond)[select]
        logp = torch.log_softmax(logits.float(), dim=-1)
        if self.process.kind == "absorbing":
            xs = x[select]
            revealed = xs != self.process.mask_id
            if bool(revealed.any()):
                carry = torch.full_like(logp, NEG).scatter_(-1, xs.clamp(max=self.process.vocab - 1).unsqueeze(-1), 0.0)
                logp = torch.where(revealed.unsqueeze(-1), carry, logp)
        return logp

    def _absorbing_in_place(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The absorbing result without autograd (sampling's fast path; the same numbers as the general one):
        the softmax runs in float32 on the masked positions only, and the revealed ones carry their token."""
        masked = x == self.process.mask_id
        m_idx = masked.nonzero(as_tuple=True)
        r_idx = (~masked).nonzero(as_tuple=True)
        if logits.dtype != torch.float32:  # only the masked positions' logits are read: convert those alone
            logp = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
            soft = torch.log_softmax(logits[m_idx].float(), dim=-1)
        else:
            logp = logits
            soft = torch.log_softmax(logp[m_idx], dim=-1)
        if r_idx[0].numel():  # written in place: no revealed-rows-by-vocabulary temporary
            logp[r_idx] = NEG
            logp[r_idx + (x[r_idx].clamp(max=self.process.vocab - 1),)] = 0.0
        logp[m_idx] = soft
        return logp


def posterior(proc: Process, logp: torch.Tensor, x: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """Log-probabilities of the tokens at level ``s`` given those at level ``t > s`` and the denoiser's
    ``log p(x0 | x_t)``: sum over x0 of p(x0 | x_t) q(x_s | x_t, x0). Shape ``x.shape + (states,)``."""
    p0 = logp.float().exp()
    if proc.kind == "absorbing":
        masked = (x == proc.mask_id).unsqueeze(-1)
        stay = s / t if t > 0 else 0.0
        moved = torch.cat([p0 * (1.0 - stay), torch.full_like(p0[..., :1], stay)], dim=-1)
        keep = torch.zeros_like(moved).scatter_(-1, x.unsqueeze(-1), 1.0)
        return torch.where(masked, moved, keep).clamp_min(1e-30).log()
    pi = proc.pi(x.device)
    a_t, a_s = 1.0 - t, 1.0 - s
    r = a_t / a_s if a_s > 0 else 0.0
    pi_k = pi.expand(x.shape + (pi.shape[-1],)).gather(-1, x.unsqueeze(-1))  # prior weight of the current token
    same = torch.zeros_like(p0).scatter_(-1, x.unsqueeze(-1), 1.0)  # delta(j, k)
    c_same = a_t + (1 - a_t) * pi_k                              # q(x_t = k | x0 = k)
    c_other = (1 - a_t) * pi_k                                   # q(x_t = k | x0 != k)
    p_k = (p0 * same).sum(-1, keepdim=True)
    ratio_sum = p_k / c_same + (1 - p_k) / c_other.clamp_min(1e-30)
    c_jk = torch.where(same.bool(), c_same, c_other).clamp_min(1e-30)
    inner = a_s * p0 / c_jk + (1 - a_s) * pi * ratio_sum
    trans = r * same + (1 - r) * pi_k                            # q(x_t = k | x_s = j)
    probs = (trans * inner).clamp_min(0)
    return (probs / probs.sum(-1, keepdim=True).clamp_min(1e-30)).clamp_min(1e-30).log()


def _valid(cond: Optional[dict], x: torch.Tensor) -> Optional[torch.Tensor]:
    mask = (cond or {}).get("mask")
    if mask is None:
        return None
    mask = mask.reshape(mask.shape[: x.ndim]) if mask.ndim > x.ndim else mask
    return mask.to(x.device).bool().expand_as(x)


def sample_levels(n: int, generator=None, eps: float = 1e-3) -> torch.Tensor:
    """Training levels in [eps, 1): one uniform offset and n evenly spaced points after it (MDLM's
    low-discrepancy draw, which lowers the variance of the loss across a batch)."""
    u0 = torch.rand(1, generator=generator)
    return eps + (1 - eps) * ((u0 + torch.arange(n, dtype=torch.float32) / n) % 1.0)


def categorical_loss(D: Callable, proc: Process, x0: torch.Tensor, level: torch.Tensor, cond: Optional[dict] = None,
                     generator=None) -> torch.Tensor:
    """Per-item training loss ([batch]), averaged over the item's valid positions (``cond["mask"]``).

    Absorbing: MDLM's continuous-time bound, the masked positions' cross-entropy weighted by 1 / level
    (for alpha = 1 - level); its expectation over level ~ U(0, 1) is the negative ELBO in nats per token.
    Uniform and marginal: the cross-entropy of x0 at every position (the x0-prediction loss of D3PM)."""
    cond = cond or {}
    xt = corrupt(proc, x0, level, generator)
    logp = D(xt, level, **cond)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    if proc.kind == "absorbing":
        nll = nll * (xt == proc.mask_id) / _expand_level(level, x0)
    valid = _valid(cond, x0)
    dims = tuple(range(1, x0.ndim))
    if valid is None:
        return nll.mean(dim=dims) if dims else nll
    v = valid.to(nll.dtype)
    return (nll * v).sum(dim=dims) / v.sum(dim=dims).clamp_min(1)


@torch.no_grad()
def elbo(D: Callable, proc: Process, x0: torch.Tensor, cond: Optional[dict] = None, *, n_levels: int = 32,
         seed: int = 0, reduce: str = "mean") -> torch.Tensor:
    """Negative ELBO of each item in nats: per valid token (``reduce="mean"``) or in all (``"sum"``); higher
    means less likely under the model. The corruptions are drawn from ``seed``, so scores repeat.

    Absorbing: MDLM's continuous-time bound by the midpoint rule over ``n_levels`` levels. Uniform and
    marginal: the discrete-time bound of ``n_levels`` steps (the KL of each step's posterior plus the
    reconstruction term; the prior term is 0 because level 1 is the prior itself)."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    cond = cond or {}
    g = torch.Generator().manual_seed(int(seed))
    b = x0.shape[0]
    dims = tuple(range(1, x0.ndim))
    valid = _valid(cond, x0)
    v = valid.float() if valid is not None else torch.ones(x0.shape, device=x0.device)
    total = torch.zeros(b, device=x0.device)
    n = int(n_levels)
    if proc.kind == "absorbing":
        for j in range(n):
            lvl = torch.full((b,), (j + 0.5) / n, device=x0.device)
            total += (categorical_loss(D, proc, x0, lvl, cond, g) * v.sum(dim=dims)) / n
    else:
        grid = torch.linspace(1.0, 0.0, n + 1).tolist()
        onehot = torch.nn.functional.one_hot(x0, int(proc.vocab)).float()
        for i in range(n):
            t, s = grid[i], grid[i + 1]
            xt = corrupt(proc, x0, torch.full((b,), t, device=x0.device), g)
            logp = D(xt, torch.full((b,), t, device=x0.device), **cond)
            if s == 0:
                nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
            else:
                q = posterior(proc, onehot.clamp_min(1e-30).log(), xt, t, s)
                p = posterior(proc, logp, xt, t, s)
                nll = (q.exp() * (q - p)).sum(-1)
            total += (nll * v).sum(dim=dims)
    return total / v.sum(dim=dims).clamp_min(1) if reduce == "mean" else total


# ------------------------------------------------------------------------------------------------------
# samplers
# ------------------------------------------------------------------------------------------------------
def _process(D: Callable) -> Process:
    proc = getattr(D, "process", None)
    if proc is None:
        raise ValueError("a categorical sampler needs a categorical denoiser (one with a .process)")
    return proc


def _levels(levels: torch.Tensor) -> list:
    lv = [float(v) for v in levels.tolist()]
    if any(b >= a for a, b in zip(lv, lv[1:])) or lv[0] > 1 or lv[-1] < 0:
        raise ValueError("a categorical ladder must decrease strictly within [0, 1]")
    return lv


def _evaluate(D: Callable, x: torch.Tensor, t: float, cond: dict) -> torch.Tensor:
    """The denoiser's log-probabilities at level ``t`` (every item the same level)."""
    return D(x, torch.full((x.shape[0],), t, device=x.device), **cond)


def _rows(cond: dict, idx: torch.Tensor, b: int) -> dict:
    """``cond`` for the items ``idx`` of a batch of ``b``: every per-item tensor (first dimension ``b``) indexed."""
    return {k: (v[idx.to(v.device)] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == b else v)
            for k, v in cond.items()}


def _refresh(D: Callable, prev: Optional[tuple], x: torch.Tensor, t: float, cond: dict,
             stale: Optional[torch.Tensor], reduce: Callable = lambda logp, x, cond: (logp,)) -> tuple:
    """``reduce(logp, x, cond)`` of the denoiser's log-probabilities (a tuple of per-item tensors) for every
    item, evaluating only the items in ``stale`` (a bool per item: its tokens changed since its last
    evaluation) and keeping the others' from ``prev``. Exact for a denoiser that ignores the level; ``prev``
    or ``stale`` None: evaluate every item."""
    if prev is None or stale is None or bool(stale.all()):
        return tuple(reduce(_evaluate(D, x, t, cond), x, cond))
    idx = stale.nonzero().reshape(-1)
    if len(idx):
        xi, ci = x[idx], _rows(cond, idx, x.shape[0])
        new = reduce(_evaluate(D, xi, t, ci), xi, ci)
        for old, value in zip(prev, new):
            old[idx.to(old.device)] = value.to(old.dtype)
    return prev


def _top_of_selected(logp: torch.Tensor, x: torch.Tensor, cond: dict) -> tuple:
    """Each position's top log-probability and its category, [B, ...] each, from the log-probabilities of
    the positions ``cond["select"]`` ([N, vocab]); every other position holds its own token at 0 (certain)."""
    sel = cond["select"]
    value = torch.zeros(x.shape, dtype=logp.dtype, device=x.device)
    index = x.clone()
    if logp.shape[0]:
        v, i = logp.max(-1)
        value[sel], index[sel] = v, i
    return value, index


def _temper(logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities at ``temperature``: 1 leaves them, 0 puts all mass on the most likely category."""
    if temperature == 1.0:
        return logp
    if temperature <= 0:
        top = logp.argmax(-1, keepdim=True)
        return torch.full_like(logp, -1e30).scatter_(-1, top, 0.0)
    return torch.log_softmax(logp / temperature, dim=-1)


def apply_rule(constrain: Optional[Callable], prev: torch.Tensor, new: torch.Tensor, last: bool,
               keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A step's draw ``new`` after ``constrain(prev, new, last, keep)``, a modality's rule on which tokens may
    stand together (a molecule's atoms and bonds within each atom's valence, say): it returns the tokens to
    go on from, with the positions it had to change put back to the mask (absorbing data, before the last
    step: drawn again later, from a denoiser that then sees their neighbours) or to an allowed category.
    ``last``: the step ends at level 0 (nothing may stay masked); ``keep`` positions are never changed (a rule
    that changed one is an error). ``constrain`` None: ``new`` as it is."""
    if constrain is None:
        return new
    out = constrain(prev, new, last, keep)
    if tuple(out.shape) != tuple(new.shape):
        raise ValueError(f"a token rule returned shape {list(out.shape)} for tokens {list(new.shape)}")
    if keep is not None and bool((out != new)[keep].any()):
        raise ValueError("a token rule changed a known (kept) token")
    return out


def ancestral(D: Callable, x: torch.Tensor, levels: torch.Tensor, *, cond: Optional[dict] = None, generator=None,
              callback: Optional[Callable] = None, keep: Optional[torch.Tensor] = None, temperature: float = 1.0,
              cache: bool = False, process: Optional[Process] = None,
              constrain: Optional[Callable] = None) -> torch.Tensor:
    """Ancestral sampling down the ladder: each step draws every token from the posterior
    :func:`posterior` (for absorbing data: each masked token is revealed with probability (t - s) / t,
    as a category drawn from the denoiser). ``keep`` positions never change; ``temperature`` scales the
    denoiser's log-probabilities (1: exact, 0: all mass on the most likely category). ``cache``: evaluate
    again only the items whose tokens changed at the last step, reusing the others' last evaluation (MDLM's
    caching, per item; exact only for a denoiser that ignores the level). ``constrain``: a modality's rule
    on which tokens may stand together (see :func:`apply_rule`), applied to each step's draw.

    Known tokens (``keep``) are exact evidence for absorbing data: a revealed token is what the forward
    process leaves clean, so infilling samples the exact conditional for an exact denoiser. For uniform and
    marginal data the denoiser reads a kept token as an observation at the current level, which conditions
    only approximately (measured on the closed-form check in tests/test_discrete.py; re-corrupting the kept
    tokens at each level, the replacement method, was further off there)."""
    proc = process or _process(D)
    lv = _levels(levels)
    cond = cond or {}
    logp, stale = None, None
    for i in range(len(lv) - 1):
        t, s = lv[i], lv[i + 1]
        (logp,) = _refresh(D, None if logp is None else (logp,), x, t, cond, stale if cache else None,
                           reduce=lambda lp, *_: (_temper(lp, temperature),))
        post = posterior(proc, logp, x, t, s)
        x_new = _gumbel_argmax(post, generator)
        if keep is not None:
            x_new = torch.where(keep, x, x_new)
        x_new = apply_rule(constrain, x, x_new, s <= 0, keep)
        stale = (x_new != x).reshape(x.shape[0], -1).any(1)
        x = x_new
        if callback is not None:
            callback({"i": i, "x": x, "sigma": t, "sigma_next": s, "denoised": logp.argmax(-1)})
    return x


def confidence(D: Callable, x: torch.Tensor, levels: torch.Tensor, *, cond: Optional[dict] = None, generator=None,
               callback: Optional[Callable] = None, keep: Optional[torch.Tensor] = None, temperature: float = 1.0,
               cache: bool = False, process: Optional[Process] = None, threshold: Optional[float] = None,
               select: bool = False, constrain: Optional[Callable] = None) -> torch.Tensor:
    """Confidence-ordered unmasking (absorbing data only): at each step the ladder fixes how many masked
    tokens stay masked (``round(masked_at_start * s)``); the others are revealed, the positions whose
    predicted distribution is most certain (highest top probability) first, each as a category drawn from
    the denoiser. The order depends on the predictions, never on the drawn values, so with exact
    predictions and one token per step it samples the exact distribution (chain rule in a data-dependent
    order); with several per step it trades that for speed like ancestral sampling does. ``temperature``
    scales the draws only (0: the most likely category, greedy decoding); the order reads the untempered
    predictions.

    ``threshold`` (a probability in (0, 1)): every masked position whose top probability reaches it is
    revealed at once as well, beyond the ladder's count (confidence-aware parallel decoding, as in Wu et al.
    2025, "Fast-dLLM"): a sentence whose remaining words the model is sure of finishes in fewer
    evaluations. None: the ladder alone.

    ``select``: ``D`` accepts ``cond["select"]`` (bool, shaped like ``x``) and then returns the
    log-probabilities of the selected positions only, [N, vocab] in row-major order
    (:class:`CategoricalDenoiser` does; the sampling run says so). Greedy decoding then evaluates the
    masked positions alone. ``constrain``: as in :func:`ancestral`."""
    proc = process or _process(D)
    if proc.kind != "absorbing":
        raise ValueError("the confidence sampler needs absorbing (masked) data; use ancestral")
    if threshold is not None and not 0 < float(threshold) < 1:
        raise ValueError(f"the confidence threshold is a probability in (0, 1), got {threshold}")
    log_threshold = math.log(float(threshold)) if threshold is not None else None
    lv = _levels(levels)
    cond = cond or {}
    b = x.shape[0]
    masked0 = (x == proc.mask_id)
    if keep is not None:
        masked0 = masked0 & ~keep
    start = masked0.reshape(b, -1).sum(1).float()
    logp, stale, top = None, None, None
    # temperature 0 draws each position's most likely category: the first maximum, as argmax, among the
    # categories (the mask is never predicted: its log-probability is NEG)
    greedy = temperature <= 0
    for i in range(len(lv) - 1):
        t, s = lv[i], lv[i + 1]
        masked = (x == proc.mask_id)
        if keep is not None:
            masked = masked & ~keep
        if not bool(masked.any()):  # nothing left to reveal: the remaining steps would change nothing
            break
        # with the cache, only the items revealed at the last step are evaluated again (a short sentence
        # reveals nothing at some steps of a long ladder)
        if greedy:  # only each position's top log-probability and category are kept (the first maximum, as
            # argmax), and only the masked positions are evaluated (a revealed one keeps its token: top 0)
            if select:
                top = _refresh(D, top, x, t, {**cond, "select": masked}, stale if cache else None,
                               reduce=_top_of_selected)
            else:
                top = _refresh(D, top, x, t, cond, stale if cache else None, reduce=lambda lp, *_: tuple(lp.max(-1)))
        else:
            (logp,) = _refresh(D, None if logp is None else (logp,), x, t, cond, stale if cache else None)
            top = tuple(logp.max(-1))
        top_v, top_i = top
        flat_m = masked.reshape(b, -1)
        remain = torch.round(start * (s / lv[0])).long() if lv[0] > 0 else torch.zeros_like(start).long()
        k = (flat_m.sum(1) - remain).clamp_min(0)                       # tokens to reveal per item
        certainty = top_v.reshape(b, -1).masked_fill(~flat_m, -math.inf)
        order = certainty.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=x.device).expand_as(order))
        reveal = rank < k.unsqueeze(1)
        if log_threshold is not None:
            reveal = reveal | (certainty >= log_threshold)
        reveal = reveal & flat_m
        if greedy:
            drawn = top_i.reshape(b, -1)
        else:
            drawn = _gumbel_argmax(logp[..., : proc.vocab], generator, temperature).reshape(b, -1)
        x_new = torch.where(reveal, drawn, x.reshape(b, -1)).reshape(x.shape)
        if constrain is not None:
            x_new = apply_rule(constrain, x, x_new, s <= 0, keep)
            reveal = (x_new != x).reshape(b, -1)
        # a sentence left with nothing to reveal is never evaluated again (with the cache)
        stale = reveal.any(1) & (flat_m & ~reveal).any(1)
        x = x_new
        if callback is not None:
            callback({"i": i, "x": x, "sigma": t, "sigma_next": s,
                      "denoised": top_i.clone() if greedy else logp.argmax(-1)})
    return x


ancestral.space = "categorical"
confidence.space = "categorical"
SAMPLERS = {"ancestral": ancestral, "confidence": confidence}
#: the sampling defaults of a categorical model (its sampler, and the name ``linear`` is registered under)
DEFAULT_SAMPLER, LADDER_NAME = "ancestral", "linear_levels"


def linear(n: int, start: float = 1.0, end: float = 0.0, device="cpu") -> torch.Tensor:
    """The categorical ladder (registered as ``linear_levels``): ``n`` steps of equal size from level ``start`` (1: the prior) to ``end`` (0:
    the data); with alpha = 1 - level every step reveals the same expected number of tokens."""
    if int(n) < 1:
        raise ValueError(f"a ladder needs at least 1 step, got {n}")
    if not 0 <= end < start <= 1:
        raise ValueError(f"a categorical ladder runs from a start in (0, 1] to an end in [0, start), got {start}, {end}")
    return torch.linspace(float(start), float(end), int(n) + 1, device=device)


def power(n: int, power: float = 1.0, start: float = 1.0, end: float = 0.0, device="cpu") -> torch.Tensor:
    """A categorical ladder (registered as ``power_levels``): level ``end + (start - end) * (1 - i / n) ** power``
    at step i. ``power`` 1 is :func:`linear`; above 1 the first steps reveal more tokens and the last ones fewer
    (each of the last decisions then sees more of the finished item); below 1 the other way round."""
    if not float(power) > 0:
        raise ValueError(f"the ladder's power must be positive, got {power}")
    lv = linear(n, 1.0, 0.0, device)
    return float(end) + (float(start) - float(end)) * lv.pow(float(power))
