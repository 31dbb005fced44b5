"""The molecule network: a permutation-equivariant graph transformer over dense node and edge features.

    net(x_in, c_noise, node_mask=..., props=None, **cond) -> F      # [B, D]; the EDM adapter makes x0_hat

``x_in`` is the scaled noisy batch in the layout of :class:`polydiff_molecule.graph.GraphCodec`
(``D = N*A + T*E``: node one-hots, then the upper-triangle pairs in ``torch.triu_indices(N, N, 1)`` order).
The network splits it into node features ``[B, N, A]`` and symmetric edge features ``[B, N, N, E]``, runs
``layers`` graph-transformer layers and joins its node and (symmetrized) edge outputs back into ``[B, D]``.

One layer (after DiGress's graph transformer, Vignac et al. 2023, with the headwise softmax of a standard
transformer):

* node queries and keys give per-feature pair products ``P_ij = q_i * k_j / sqrt(d_head)`` ``[B, N, N, d]``;
  the edge state modulates them, ``P_ij <- P_ij * (1 + W_mul e_ij) + W_add e_ij`` (multiplicative gating
  and an additive bias);
* attention logits are ``P`` summed over each head's features; keys that are padding atoms are masked
  out, so padding is never attended; node i's update is ``sum_j softmax_j(logits) v_j``;
* edges are updated from the symmetrized pair products ``(P_ij + P_ji) / 2`` (so edge states stay
  symmetric), then node and edge MLPs;
* every sub-layer is pre-norm with adaptive layer norm (FiLM shift and scale) and a zero-initialised
  residual gate, all computed from one conditioning vector: an embedding of ``c_noise``, of the number of
  atoms, and of the optional properties (adaLN-Zero, Peebles & Xie 2023);
* node states of padding atoms and edge states of pairs with a padding atom (and of the diagonal) are
  reset to zero after every layer, so padding takes no part in the computation.

There are no positional encodings: permuting the atoms of the input permutes the output identically.

Categorical models (``categorical=True``, the token layout of :class:`polydiff_molecule.encoder.GraphEncoder`):
``x`` is ``[B, N + T]`` integer categories (atom classes 0 .. A-1 at the atoms, A + bond class at the pairs,
the mask id A + E where masked); atoms and pairs enter as one-hots of their classes plus the mask, the
noise level is read as ``c_noise``, and the output is logits ``[B, N + T, A + E]``: at an atom the A atom
classes, at a pair the E bond classes (the other kind's classes are impossible there). With
``structure=True`` each atom also reads structural features of the graph revealed so far (after DiGress'
extra features): the valence its revealed bonds use, its revealed degree, how many of its pairs are still
masked, and the triangles and 4-cycles through it (closed walks of the revealed adjacency, exact counts).

Property conditioning (``n_props > 0``): ``cond["props"]`` is a float ``[B, n_props]`` of standardized
property values. An entry that is NaN or at most :data:`NULL_PROP` / 2 means "no condition" for that
property and is replaced by a learned null embedding; classifier-free guidance drops a whole row by setting
it to :data:`NULL_PROP` (the modality's ``guidance`` null value).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from polydiff.errors import PolydiffError

__all__ = ["GraphTransformer", "GraphTransformerConfig", "NULL_PROP"]

#: the null ("no condition") value of a property entry; guidance uses it to drop the condition
NULL_PROP = -1000.0
#: per-atom structural features of a categorical model with ``structure`` (see GraphTransformer._structure)
STRUCTURE_FEATURES = 5


@dataclass
class GraphTransformerConfig:
    max_atoms: int               # N: node slots (filled from the fitted encoder by the modality's configure)
    n_atom_types: int            # A: node classes
    n_bond_types: int = 4        # E: edge classes, "none" included
    hidden: int = 256            # node state width
    edge_hidden: int = 64        # edge state width
    layers: int = 6              # graph-transformer layers
    heads: int = 8               # attention heads (hidden must be a multiple)
    emb: int = 128               # width of the conditioning vector (noise level, atom count, properties)
    ffn_mult: int = 2            # MLP expansion of node and edge feed-forward blocks
    dropout: float = 0.0         # dropout on attention weights and MLP activations
    n_props: int = 0             # 0: unconditional; P: cond["props"] is [B, P] standardized properties
    categorical: bool = False    # tokens in, class logits out (categorical diffusion), not dense features
    structure: bool = False      # categorical: atoms also read valence, degree and cycle counts so far
    attention: str = "pair"      # pair: DiGress' per-feature pair products; dot: per-head dot products with
                                 # an edge bias (a few times cheaper per atom pair; see DotGraphLayer)

    def __post_init__(self):
        for name in ("max_atoms", "n_atom_types", "n_bond_types", "hidden", "edge_hidden", "layers", "heads",
                     "emb", "ffn_mult"):
            if int(getattr(self, name)) < 1:
                raise PolydiffError(f"network.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.hidden % self.heads:
            raise PolydiffError(f"network.hidden ({self.hidden}) must be a multiple of network.heads ({self.heads})")
        if self.n_props < 0:
            raise PolydiffError(f"network.n_props must be >= 0, got {self.n_props!r}")
        if self.attention not in ("pair", "dot"):
            raise PolydiffError(f"network.attention must be pair or dot, got {self.attention!r}")


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FiLM of normalised features: ``x * (1 + scale) + shift``; shift and scale are [B, C]."""
    view = (shift.shape[0],) + (1,) * (x.ndim - 2) + (shift.shape[-1],)
    return torch.addcmul(shift.view(view), x, (1 + scale).view(view))  # one pass over x


def _gate(g: torch.Tensor, ndim: int) -> torch.Tensor:
    return g.view((g.shape[0],) + (1,) * (ndim - 2) + (g.shape[-1],))


class FourierEmbedding(nn.Module):
    """Fixed random Fourier features of the scalar noise input c_noise (Tancik et al. 2020)."""

    def __init__(self, size: int, scale: float = 8.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(size // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        ang = c.float()[:, None] * self.freqs[None] * (2 * math.pi)
        return torch.cat([ang.cos(), ang.sin()], dim=1)


class ConditionEmbedding(nn.Module):
    """One conditioning vector [B, emb] from c_noise, the number of real atoms and optional properties."""

    def __init__(self, cfg: GraphTransformerConfig):
        super().__init__()
        self.noise = FourierEmbedding(cfg.emb)
        self.noise_proj = nn.Linear(cfg.emb, cfg.emb)
        self.size = nn.Embedding(cfg.max_atoms + 1, cfg.emb)
        self.n_props = cfg.n_props
        if cfg.n_props:
            self.prop_weight = nn.Parameter(torch.randn(cfg.n_props, cfg.emb) * 0.02)
            self.prop_bias = nn.Parameter(torch.zeros(cfg.n_props, cfg.emb))
            self.prop_null = nn.Parameter(torch.randn(cfg.n_props, cfg.emb) * 0.02)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(cfg.emb, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))

    def forward(self, c_noise: torch.Tensor, node_mask: torch.Tensor, props=None) -> torch.Tensor:
        b = node_mask.shape[0]
        c_noise = torch.as_tensor(c_noise, device=node_mask.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(b)
        count = node_mask.sum(1).round().long().clamp(0, self.size.num_embeddings - 1)
        c = self.noise_proj(self.noise(c_noise).to(node_mask.dtype)) + self.size(count)
        if self.n_props:
            if props is None:
                missing = torch.ones(b, self.n_props, dtype=torch.bool, device=node_mask.device)
                values = torch.zeros(b, self.n_props, dtype=node_mask.dtype, device=node_mask.device)
            else:
                props = props.to(node_mask.dtype)
                if props.ndim != 2 or props.shape[1] != self.n_props:
                    raise PolydiffError(f"cond['props'] has shape {list(props.shape)}, expected [{b}, {self.n_props}]")
                missing = torch.isnan(props) | (props <= NULL_PROP / 2)
                values = torch.where(missing, torch.zeros_like(props), props)
            emb = values[..., None] * self.prop_weight + self.prop_bias             # [B, P, emb]
            emb = torch.where(missing[..., None], self.prop_null.expand_as(emb), emb)
            c = c + emb.sum(1)
        return self.mlp(c)


class GraphTransformerLayer(nn.Module):
    """Edge-aware attention on nodes, edge update from pair products, node and edge MLPs; adaLN-Zero."""

    def __init__(self, cfg: GraphTransformerConfig):
        super().__init__()
        d, de, m = cfg.hidden, cfg.edge_hidden, cfg.ffn_mult
        self.heads, self.d, self.de = cfg.heads, d, de
        self.ada = nn.Linear(cfg.emb, 6 * d + 6 * de)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.norm_h1 = nn.LayerNorm(d, elementwise_affine=False)
        self.norm_h2 = nn.LayerNorm(d, elementwise_affine=False)
        self.norm_e1 = nn.LayerNorm(de, elementwise_affine=False)
        self.norm_e2 = nn.LayerNorm(de, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.e_mul = nn.Linear(de, d)
        self.e_add = nn.Linear(de, d)
        self.h_out = nn.Linear(d, d)
        self.e_out = nn.Linear(d, de)
        self.ffn_h = nn.Sequential(nn.Linear(d, m * d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(m * d, d))
        self.ffn_e = nn.Sequential(nn.Linear(de, m * de), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(m * de, de))
        self.attn_drop = nn.Dropout(cfg.dropout)

    def _modulated(self, h, e, c):
        """adaLN-Zero: the gates and second-norm modulations of nodes and edges, and the first-norm inputs."""
        d = h.shape[-1]
        mods = self.ada(c)
        sh1, sc1, g1, sh2, sc2, g2 = mods[:, :6 * d].chunk(6, dim=-1)
        esh1, esc1, eg1, esh2, esc2, eg2 = mods[:, 6 * d:].chunk(6, dim=-1)
        return ((g1, sh2, sc2, g2), (eg1, esh2, esc2, eg2), _modulate(self.norm_h1(h), sh1, sc1),
                _modulate(self.norm_e1(e), esh1, esc1))

    def forward(self, h, e, c, node_mask, pair_mask):
        b, n, d = h.shape
        hd = d // self.heads
        (g1, sh2, sc2, g2), (eg1, esh2, esc2, eg2), hn, en = self._modulated(h, e, c)
        q, k, v = self.qkv(hn).chunk(3, dim=-1)
        pair = (q[:, :, None, :] * k[:, None, :, :]) * (1.0 / math.sqrt(hd))          # [B, N, N, d]
        pair = pair * (1 + self.e_mul(en)) + self.e_add(en)
        logits = pair.view(b, n, n, self.heads, hd).sum(-1)                            # [B, N, N, H]
        key_ok = node_mask[:, None, :, None] > 0
        logits = logits.masked_fill(~key_ok, torch.finfo(logits.dtype).min)
        attn = self.attn_drop(torch.softmax(logits, dim=2))
        out = torch.einsum("bijh,bjhc->bihc", attn, v.view(b, n, self.heads, hd)).reshape(b, n, d)
        h = h + _gate(g1, 3) * self.h_out(out)
        e = e + _gate(eg1, 4) * self.e_out(0.5 * (pair + pair.transpose(1, 2)))

        h = h + _gate(g2, 3) * self.ffn_h(_modulate(self.norm_h2(h), sh2, sc2))
        e = e + _gate(eg2, 4) * self.ffn_e(_modulate(self.norm_e2(e), esh2, esc2))
        return h * node_mask[..., None], e * pair_mask[..., None]


class DotGraphLayer(GraphTransformerLayer):
    """A cheaper layer (``attention="dot"``): attention logits are per-head dot products ``q_i . k_j`` plus a
    bias from the edge state, and edges are updated from themselves, their two atoms and the (symmetrized)
    attention logits. Edge states live on the T atom pairs ``i < j`` only (``e [B, T, de]``; an undirected
    graph needs no second direction and no diagonal), so per molecule it computes T edge updates instead of
    N * N, each about a third of :class:`GraphTransformerLayer`'s, whose per-feature pair products and their
    edge gating dominate a small model's time; adaLN-Zero and the masking are the same."""

    def __init__(self, cfg: GraphTransformerConfig):
        super().__init__(cfg)  # adaLN, norms, qkv, node output and both MLPs as the pair-product layer
        del self.e_mul, self.e_add, self.e_out  # its edge gating, replaced by:
        d, de, nh = cfg.hidden, cfg.edge_hidden, cfg.heads
        self.e_bias = nn.Linear(de, nh)
        self.e_self = nn.Linear(de, de)
        self.e_node = nn.Linear(d, de, bias=False)
        self.e_att = nn.Linear(nh, de, bias=False)

    def forward(self, h, e, c, node_mask, pair_mask, iu, ju, key_off, pair_index):
        """``h [B, N, d]``, ``e [B, T, de]`` (pairs ``(iu, ju)``), ``pair_mask [B, T]``, ``key_off [B * H, 1, N]``
        (True at padding keys, :func:`_key_off`) and ``pair_index [N * N]`` (:func:`_pair_index`); the network
        computes the last two once for all its layers."""
        b, n, d = h.shape
        nh = self.heads
        hd = d // nh
        (g1, sh2, sc2, g2), (eg1, esh2, esc2, eg2), hn, en = self._modulated(h, e, c)
        q, k, v = (t_.view(b, n, nh, hd).transpose(1, 2) for t_ in self.qkv(hn).chunk(3, dim=-1))
        bias = F.pad(self.e_bias(en).transpose(1, 2), (0, 1))                          # [B, H, T + 1]
        bias = bias[:, :, pair_index].view(b * nh, n, n)                               # symmetric edge bias
        logits = torch.baddbmm(bias, q.reshape(b * nh, n, hd), k.reshape(b * nh, n, hd).transpose(1, 2),
                               alpha=1.0 / math.sqrt(hd))                                # [B * H, N, N]
        attn = torch.softmax(logits.masked_fill(key_off, torch.finfo(logits.dtype).min), dim=-1)
        attn = self.attn_drop(attn)
        out = torch.bmm(attn, v.reshape(b * nh, n, hd)).view(b, nh, n, hd).transpose(1, 2).reshape(b, n, d)
        h = torch.addcmul(h, _gate(g1, 3), self.h_out(out))
        flat = logits.view(b, nh, n * n)                                                 # [B, H, N * N]
        sym = (0.5 * (flat[:, :, iu * n + ju] + flat[:, :, ju * n + iu])).transpose(1, 2)  # [B, T, H]
        pn = self.e_node(hn)
        upd = self.e_self(en) + self.e_att(sym) + pn[:, iu] + pn[:, ju]
        e = torch.addcmul(e, _gate(eg1, 3), upd)

        h = torch.addcmul(h, _gate(g2, 3), self.ffn_h(_modulate(self.norm_h2(h), sh2, sc2)))
        e = torch.addcmul(e, _gate(eg2, 3), self.ffn_e(_modulate(self.norm_e2(e), esh2, esc2)))
        return h * node_mask[..., None], e * pair_mask[..., None]


def _key_off(node_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B * heads, 1, N]``: True where the key is padding (never attended)."""
    return (node_mask <= 0).repeat_interleave(heads, dim=0)[:, None, :]


def _pair_index(n: int, iu: torch.Tensor, ju: torch.Tensor) -> torch.Tensor:
    """``[N * N]``: the index in ``(iu, ju)`` of the pair at each entry of the N x N matrix (both triangles);
    ``T`` (one past the last pair) on the diagonal."""
    idx = torch.full((n * n,), iu.numel(), dtype=torch.long, device=iu.device)
    pairs = torch.arange(iu.numel(), device=iu.device)
    idx[iu * n + ju] = pairs
    idx[ju * n + iu] = pairs
    return idx


class GraphTransformer(nn.Module):
    """The denoiser network of the molecule modality; see the module docstring."""

    def __init__(self, cfg: GraphTransformerConfig):
        super().__init__()
        self.cfg = cfg
        n, a, ne = cfg.max_atoms, cfg.n_atom_types, cfg.n_bond_types
        iu = torch.triu_indices(n, n, 1)
        self.register_buffer("iu", iu[0], persistent=False)
        self.register_buffer("ju", iu[1], persistent=False)
        self.register_buffer("offdiag", 1.0 - torch.eye(n), persistent=False)
        self.register_buffer("pair_index", _pair_index(n, iu[0], iu[1]), persistent=False)
        self.dim = n * a + iu.shape[1] * ne
        self.cond = ConditionEmbedding(cfg)
        if cfg.categorical:
            self.dim = n + iu.shape[1]  # one category per atom and per pair; the mask id is one more input class
        self.node_in = nn.Linear(a + cfg.categorical, cfg.hidden)
        if cfg.structure:
            if not cfg.categorical:
                raise PolydiffError("network.structure applies to categorical models (network.categorical)")
            self.struct_in = nn.Linear(STRUCTURE_FEATURES, cfg.hidden)
        self.edge_in = nn.Linear(ne + cfg.categorical, cfg.edge_hidden)
        layer = DotGraphLayer if cfg.attention == "dot" else GraphTransformerLayer
        self.blocks = nn.ModuleList(layer(cfg) for _ in range(cfg.layers))
        self.final_ada = nn.Linear(cfg.emb, 2 * cfg.hidden + 2 * cfg.edge_hidden)
        self.norm_h = nn.LayerNorm(cfg.hidden, elementwise_affine=False)
        self.norm_e = nn.LayerNorm(cfg.edge_hidden, elementwise_affine=False)
        self.node_out = nn.Linear(cfg.hidden, a)
        self.edge_out = nn.Linear(cfg.edge_hidden, ne)
        for lin in (self.final_ada, self.node_out, self.edge_out):  # the untrained model outputs F = 0
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @classmethod
    def from_config(cls, config: dict) -> "GraphTransformer":
        """Build from the config's ``network`` section (``max_atoms`` and ``n_atom_types`` are required)."""
        known = {f.name for f in fields(GraphTransformerConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise PolydiffError(f"unknown molecule network settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("max_atoms", "n_atom_types") if k not in config]
        if missing:
            raise PolydiffError(f"the molecule network config lacks {', '.join(missing)} (the modality's configure "
                                "fills them from the fitted encoder)")
        return cls(GraphTransformerConfig(**config))

    def config(self) -> dict:
        return asdict(self.cfg)

    def _node_mask(self, x_in: torch.Tensor, node_mask, mask) -> torch.Tensor:
        b, n, a = x_in.shape[0], self.cfg.max_atoms, self.cfg.n_atom_types
        if node_mask is None and mask is not None and mask.ndim == 2 and mask.shape[1] == self.dim:
            # the element mask's node entries
            node_mask = mask[:, :n] if self.cfg.categorical else mask[:, :n * a].reshape(b, n, a)[..., 0]
        if node_mask is None:
            return x_in.new_ones(b, n)
        if tuple(node_mask.shape) != (b, n):
            raise PolydiffError(f"cond['node_mask'] has shape {list(node_mask.shape)}, expected [{b}, {n}]")
        return node_mask.to(x_in.dtype)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, node_mask=None, mask=None, props=None, **unused):
        """``x_in [B, D]``, ``c_noise [B]`` -> ``[B, D]`` (node and symmetrized edge outputs, joined)."""
        cfg = self.cfg
        b, n, a, ne = x_in.shape[0], cfg.max_atoms, cfg.n_atom_types, cfg.n_bond_types
        if x_in.ndim != 2 or x_in.shape[1] != self.dim:
            raise PolydiffError(f"x has shape {list(x_in.shape)}, expected [B, {self.dim}] for N={n}, A={a}, E={ne}")
        if cfg.categorical:
            nodes, tri = self._one_hots(x_in)
            x_in = nodes  # the float type the states take
        else:
            nodes = x_in[:, :n * a].reshape(b, n, a)
            tri = x_in[:, n * a:].reshape(b, -1, ne)
        nm = self._node_mask(x_in, node_mask, mask)
        pm = nm[:, :, None] * nm[:, None, :] * self.offdiag
        edges = x_in.new_zeros(b, n, n, tri.shape[-1])
        edges[:, self.iu, self.ju] = tri
        edges[:, self.ju, self.iu] = tri

        c = F.silu(self.cond(c_noise, nm, props))
        h = self.node_in(nodes)
        if cfg.structure:
            h = h + self.struct_in(self._structure(edges, nm))
        h = h * nm[..., None]
        d, de = cfg.hidden, cfg.edge_hidden
        if cfg.attention == "dot":  # edge states on the pairs i < j only
            pt = pm[:, self.iu, self.ju]
            e = self.edge_in(tri) * pt[..., None]
            key_off = _key_off(nm, cfg.heads)
            for block in self.blocks:
                h, e = block(h, e, c, nm, pt, self.iu, self.ju, key_off, self.pair_index)
            sh, sc, esh, esc = torch.split(self.final_ada(c), [d, d, de, de], dim=-1)
            out_n = self.node_out(_modulate(self.norm_h(h), sh, sc)) * nm[..., None]
            out_t = self.edge_out(_modulate(self.norm_e(e), esh, esc))
            if cfg.categorical:
                return self._logits(out_n, out_t)
            return torch.cat([out_n.reshape(b, n * a), out_t.reshape(b, -1)], dim=1)
        e = self.edge_in(edges) * pm[..., None]
        for block in self.blocks:
            h, e = block(h, e, c, nm, pm)

        sh, sc, esh, esc = torch.split(self.final_ada(c), [d, d, de, de], dim=-1)
        out_n = self.node_out(_modulate(self.norm_h(h), sh, sc)) * nm[..., None]
        out_e = self.edge_out(_modulate(self.norm_e(e), esh, esc))
        out_e = 0.5 * (out_e + out_e.transpose(1, 2))
        if cfg.categorical:
            return self._logits(out_n, out_e[:, self.iu, self.ju])
        return torch.cat([out_n.reshape(b, n * a), out_e[:, self.iu, self.ju].reshape(b, -1)], dim=1)

    def _one_hots(self, x: torch.Tensor):
        """Categorical input ``[B, N + T]`` -> atom one-hots ``[B, N, A + 1]`` and pair one-hots ``[B, T, E + 1]``
        (the last class of each: masked)."""
        n, a, ne = self.cfg.max_atoms, self.cfg.n_atom_types, self.cfg.n_bond_types
        x = x.long()
        masked = x == a + ne
        nodes = torch.where(masked[:, :n], a, x[:, :n]).clamp(0, a)
        pairs = torch.where(masked[:, n:], ne, x[:, n:] - a).clamp(0, ne)
        dtype = self.node_in.weight.dtype
        return F.one_hot(nodes, a + 1).to(dtype), F.one_hot(pairs, ne + 1).to(dtype)

    def _structure(self, edges: torch.Tensor, nm: torch.Tensor) -> torch.Tensor:
        """Per-atom features ``[B, N, 5]`` of the revealed graph, from the pair one-hots ``edges [B, N, N, E + 1]``
        (classes none, single, double, triple, masked): valence used / 4, degree / 4, masked pairs / N,
        triangles / 2 and 4-cycles / 4 through the atom."""
        ne = self.cfg.n_bond_types
        e = edges.float()
        order = torch.arange(ne, dtype=e.dtype, device=e.device)  # bond order of each class (none: 0)
        valence = (e[..., :ne] * order).sum((-1, -2))
        adj = e[..., 1:ne].sum(-1)                                 # a revealed bond
        masked = (e[..., ne] * nm[:, None, :]).sum(-1)
        deg = adj.sum(-1)
        a2 = adj @ adj
        a3 = a2 @ adj
        tri = torch.diagonal(a3, dim1=-2, dim2=-1) / 2
        walks4 = (a2 * a2).sum(-1)                                 # diag(A^4): A symmetric, so (A^2)_ii^2 summed
        c4 = (walks4 - deg * deg - (adj @ (deg - 1).unsqueeze(-1)).squeeze(-1)) / 2
        n = float(self.cfg.max_atoms)
        out = torch.stack([valence / 4, deg / 4, masked / n, tri / 2, c4 / 4], -1)
        return (out * nm[..., None]).to(self.node_in.weight.dtype)

    def _logits(self, out_n: torch.Tensor, out_t: torch.Tensor) -> torch.Tensor:
        """Atom logits ``[B, N, A]`` and pair logits ``[B, T, E]`` -> ``[B, N + T, A + E]``, each kind's classes
        impossible (a large negative logit) where the other kind lives."""
        b, n, a = out_n.shape
        ne = out_t.shape[-1]
        out = out_n.new_full((b, n + out_t.shape[1], a + ne), -1e4)
        out[:, :n, :a] = out_n
        out[:, n:, a:] = out_t
        return out
