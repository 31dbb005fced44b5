"""The conformance kit every modality plugin's tests run.

    from polydiff.testing import check_modality

    def test_conformance(tmp_path):
        check_modality(get_modality("points"), items=my_small_items, tmp_path=tmp_path)

It checks, in order: encode -> decode -> encode round trip; write -> read round trip; encoder metadata is
JSON and rebuilds an identical encoder; the denoiser's output shape, dtype and finiteness; a 2-step
training run; checkpoint save/load equality (weights and outputs); seeded sampling determinism. Each
check raises AssertionError with a message naming the check. :func:`check_plugin` registers a plugin
module in a fresh registry and checks that every hook it implements is known.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from .modality import Modality

__all__ = ["check_modality", "check_plugin", "assert_items_close"]


def _take(cond: dict, n: int) -> dict:
    return {k: (v[:n] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in cond.items()}


def assert_items_close(a, b, encoder, atol: float = 1e-4, what: str = "items"):
    """Two item collections are equal once encoded with ``encoder``."""
    xa, ca = encoder.encode(a)
    xb, cb = encoder.encode(b)
    assert xa.shape == xb.shape, f"{what}: shapes differ {tuple(xa.shape)} vs {tuple(xb.shape)}"
    assert torch.allclose(xa.float(), xb.float(), atol=atol), \
        f"{what}: encodings differ (max abs diff {(xa.float() - xb.float()).abs().max().item():.3g})"
    assert sorted(ca) == sorted(cb), f"{what}: condition keys differ {sorted(ca)} vs {sorted(cb)}"
    for k in ca:
        assert torch.equal(ca[k], cb[k]), f"{what}: condition {k!r} differs"


def check_modality(modality: Modality, items: Any, tmp_path, *, config: Optional[dict] = None,
                   write_suffix: str = "", atol: float = 1e-4, decode_atol: Optional[float] = None,
                   sample_options: Optional[dict] = None, skip: tuple = ()) -> dict:
    """Run every conformance check on ``modality`` with a small collection of real ``items``.

    ``config`` overrides the modality's default config (use a tiny network); ``write_suffix`` is appended
    to the output path given to ``encoder.write`` (e.g. ".csv"); ``skip`` names checks to leave out
    (only with a reason in the calling test). Returns the trained Model for further checks.
    """
    from .model import Model, default_config, merge_config
    from .precond import denoiser_for
    from .training import modality_trainer, run_folder

    tmp_path = Path(tmp_path)
    cfg = merge_config(default_config(modality.default_config), modality.default_config, config,
                       {"train": {"steps": 2, "batch_size": 4, "log_every": 1, "ckpt_every": 1, "warmup": 0}})

    # 1. encoder: fit, encode, decode, encode again
    from .modality import fresh_encoder

    enc = fresh_encoder(modality, cfg).fit(items)
    x, cond = enc.encode(items)
    if modality.configure is not None:
        cfg = modality.configure(cfg, enc)
    from .discrete import corrupt, process_of
    from .embedding import embed, lift_cond, spec_of

    proc = process_of(cfg)
    emb = spec_of(cfg)
    if emb is not None:
        assert isinstance(x, torch.Tensor) and x.dtype == torch.long, "encode: an embedding model's x must be tokens"
    elif proc is None:
        assert isinstance(x, torch.Tensor) and x.is_floating_point(), "encode: x must be a float tensor"
    else:
        assert isinstance(x, torch.Tensor) and x.dtype == torch.long, "encode: categorical x must be a long tensor"
        assert 0 <= int(x.min()) and int(x.max()) < proc.vocab, "encode: tokens outside [0, vocab)"
    assert tuple(x.shape[1:]) == tuple(enc.sample_shape()), \
        f"encode: item shape {tuple(x.shape[1:])} != sample_shape() {tuple(enc.sample_shape())}"
    for k, v in cond.items():
        assert isinstance(v, torch.Tensor) and v.shape[0] == x.shape[0], f"encode: cond[{k!r}] must be a [N, ...] tensor"
    back = enc.decode(x, cond)
    assert_items_close(items, back, enc, atol=decode_atol or atol, what="encode/decode round trip")

    # 2. metadata: JSON, and rebuilds an identical encoder
    meta = enc.metadata()
    meta2 = json.loads(json.dumps(meta))
    enc2 = modality.encoder(meta2)
    x2, _ = enc2.encode(items)
    assert torch.allclose(x, x2, atol=atol), "metadata: an encoder rebuilt from metadata() encodes differently"

    # 3. files: write then read gives the same items
    if "write_read" not in skip:
        out = tmp_path / f"written{write_suffix}"
        files = enc.write(back, out)
        assert files and all(Path(f).exists() for f in files), "write: returned files must exist"
        again = enc2.read(files[0] if write_suffix else out)
        assert_items_close(back, again, enc, atol=decode_atol or atol, what="write/read round trip")

    # 4. denoiser output shape, dtype, finiteness (with the conditions training computes from x itself)
    if modality.augment is not None:
        cond = modality.augment(x, cond, cfg, torch.Generator().manual_seed(0))
    net = modality.network(cfg["network"])
    D = denoiser_for(net, cfg)
    b = min(4, x.shape[0])
    sig = torch.full((b,), 0.7)

    dcond = lift_cond(cond, x.ndim) if emb is not None else cond  # the denoiser's conditions
    ex = embed(net, x).detach() if emb is not None else x  # and its data: the tokens' embeddings

    def noisy(level):
        if proc is None:
            return ex[:b] + level * torch.randn_like(ex[:b])
        return corrupt(proc, x[:b], torch.full((b,), level), torch.Generator().manual_seed(0))

    with torch.no_grad():
        out = D(noisy(0.7), sig, **_take(dcond, b))
    if proc is None:
        assert out.shape == ex[:b].shape, f"denoiser: output shape {tuple(out.shape)} != input shape {tuple(ex[:b].shape)}"
        assert out.dtype == ex.dtype, f"denoiser: output dtype {out.dtype} != input dtype {ex.dtype}"
    else:
        want = tuple(x[:b].shape) + (proc.vocab,)
        assert tuple(out.shape) == want, f"denoiser: output shape {tuple(out.shape)} != {want} (log-probabilities)"
        assert torch.allclose(out.exp().sum(-1), torch.ones(()), atol=1e-4), "denoiser: rows are not distributions"
    assert torch.isfinite(out).all(), "denoiser: non-finite output"

    # 5. two training steps, assembled as `polydiff train` assembles them
    run = tmp_path / "run"
    trainer, _ = modality_trainer(modality, enc, x, cond, cfg, run_folder(run), device="cpu")
    summary = trainer.fit()
    assert summary["step"] == 2, f"training: expected to stop at step 2, got {summary['step']}"
    assert torch.isfinite(torch.tensor(summary["loss"])), "training: non-finite loss"

    # 6. checkpoint save/load equality
    if "checkpoint" not in skip:
        model = Model.load(summary["model_path"], modality=modality, device="cpu")
        reloaded = Model.load(model.save(tmp_path / "resaved.safetensors"), modality=modality, device="cpu")
        for (k, v), (k2, v2) in zip(model.net.state_dict().items(), reloaded.net.state_dict().items()):
            assert k == k2 and torch.equal(v, v2), f"checkpoint: parameter {k} differs after save/load"
        xb = noisy(0.3)
        with torch.no_grad():
            o1 = model.denoiser(xb, torch.full((b,), 0.3), **_take(dcond, b))
            o2 = reloaded.denoiser(xb, torch.full((b,), 0.3), **_take(dcond, b))
        assert torch.equal(o1, o2), "checkpoint: outputs differ after save/load"
    else:
        model = Model.load(summary["model_path"], modality=modality, device="cpu")

    # 7. seeded sampling determinism
    if "sampling" not in skip:
        opts = dict(sample_options or {})
        a, _ = model.sample(3, steps=3, seed=0, **opts)
        a2, _ = model.sample(3, steps=3, seed=0, **opts)
        c, _ = model.sample(3, steps=3, seed=1, **opts)
        assert torch.equal(a, a2), "sampling: the same seed gave different samples"
        assert not torch.equal(a, c), "sampling: different seeds gave identical samples"
        assert proc is not None or torch.isfinite(a).all(), "sampling: non-finite samples"
    return model


def check_plugin(module: Any, name: Optional[str] = None) -> "Any":
    """Register ``module`` in a fresh registry (no autoload); fail if a hook is unknown or a hook raises."""
    from .plugins import Registry

    reg = Registry()
    reg.load_builtins()
    rec = reg.register_plugin(module, name=name)
    assert rec.status == "ok", f"plugin {rec.name!r} failed to register: {rec.error}"
    return reg
