"""A trained model: network + adapter + encoder + config, loaded from one bundle, ready to sample or score.

    import polydiff
    m = polydiff.load("points")                    # a pretrained name, or a path to a .safetensors bundle
    items = m.generate(500, label="moons", seed=0)  # decoded items (here: a PointSet)
    x, cond = m.sample(500, sampler="heun", steps=18, seed=0)   # raw tensors

Configs are plain nested dicts: ``parameterisation``, ``sigma_data``, ``network`` (the modality's
network hyper-parameters), ``train`` (see :func:`polydiff.training.default_train_config`) and ``sample``
(sampler, steps, schedule and its arguments, cfg_scale).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import checkpoint
from .errors import InputError, PolydiffError, UnknownName
from .guidance import cfg_denoiser
from .modality import Modality
from .precond import denoiser_for

__all__ = ["Model", "load_model", "default_config", "merge_config", "resolve_model_path", "default_device", "train_modality",
           "PRECISIONS", "resolve_precision"]

#: sampling precisions: ``fp32``; ``bf16`` (the network under bfloat16 autocast, the sampler's arithmetic in
#: float32); ``auto`` (bf16 where the device computes it natively, else fp32)
PRECISIONS = ("fp32", "bf16", "auto")


def default_sample_config() -> dict:
    return {"sampler": "dpmpp_2m", "steps": 20, "schedule": "karras",
            "schedule_args": {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}, "cfg_scale": 1.0,
            "sampler_args": {}, "precision": "fp32"}


def default_config(modality_config: Optional[dict] = None) -> dict:
    """The core's defaults; a modality's ``default_config`` and a recipe are merged on top. For a modality
    whose config names a categorical ``process``, the sampling defaults are the categorical ones (the
    ancestral sampler on the `linear_levels` ladder)."""
    from .training import default_train_config

    sample = default_sample_config()
    if (modality_config or {}).get("process"):
        from .discrete import DEFAULT_SAMPLER, LADDER_NAME

        sample.update(sampler=DEFAULT_SAMPLER, schedule=LADDER_NAME, schedule_args={})
    return {"parameterisation": "edm", "sigma_data": 0.5, "network": {},
            "train": default_train_config(), "sample": sample}


def merge_config(base: dict, *overrides: Optional[dict]) -> dict:
    """Deep-merge dicts left to right (later wins); returns a new dict."""
    out = copy.deepcopy(base)
    for ov in overrides:
        for k, v in (ov or {}).items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge_config(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


def default_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise PolydiffError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise PolydiffError(f"device {device!r} asked for, but no CUDA GPU is available here")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively (a CUDA GPU that supports it; a CPU with
    AVX512-BF16 or AMX), where bf16 autocast is faster than float32 rather than emulated."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(c()) for c in checks if c is not None)
    return False


def resolve_precision(precision: Optional[str], device: torch.device) -> str:
    """``fp32`` or ``bf16`` for a requested precision (None: fp32); ``auto`` picks bf16 where it is native."""
    p = str(precision or "fp32").lower()
    if p not in PRECISIONS:
        raise PolydiffError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if p == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return p


def resolve_model_path(model: str, modality: Optional[str] = None) -> Tuple[Path, Optional[str]]:
    """A bundle path for ``model``: an existing file, or a pretrained name (``name`` or ``modality:name``)."""
    from .plugins import registry

    p = Path(str(model)).expanduser()
    if p.exists() or p.suffix in (".safetensors",) or p.suffix.lower() in checkpoint.PICKLE_SUFFIXES or "/" in str(model):
        return p, modality
    reg = registry()
    if ":" in model:
        modality, model = model.split(":", 1)
    candidates = [reg.modality(modality)] if modality else list(reg.modalities.values())
    for m in candidates:
        if model in m.pretrained:
            return Path(m.pretrained[model]), m.name
    for m in candidates:  # a modality's name stands for its default checkpoint
        if model == m.name and m.pretrained:
            return Path(next(iter(m.pretrained.values()))), m.name
    known = sorted(f"{m.name}:{k}" for m in candidates for k in m.pretrained)
    raise UnknownName(f"no model file or pretrained model named {model!r}; pretrained: {', '.join(known) or 'none'}")


def _round_seed(seed: int, j: int) -> int:
    """The seed of draw ``j`` > 0 of a best-of-k sample seeded ``seed`` (independent of other seeds' draws)."""
    return int(np.random.SeedSequence([int(seed), 7919, int(j)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Model:
    """A loaded model. ``denoiser`` is D(x, sigma, **cond) with EMA weights unless ``ema=False``."""

    def __init__(self, modality: Modality, net: torch.nn.Module, encoder, config: dict, meta: Optional[dict] = None,
                 path: Optional[Path] = None, device=None):
        self.modality = modality
        self.device = default_device(device)
        self.net = net.to(self.device).eval()
        self.encoder = encoder
        self.config = config
        self.meta = meta or {}
        self.path = path
        self.denoiser = denoiser_for(self.net, config)
        self.guidance = dict(self.meta.get("guidance") or modality.guidance or {})

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model, modality=None, device=None, ema: bool = True) -> "Model":
        """Load a bundle by path or pretrained name. ``modality`` is a name or a :class:`Modality` object
        (the object is used as is, without the plugin registry)."""
        from .plugins import registry

        given = modality if isinstance(modality, Modality) else None
        wanted = given.name if given is not None else modality
        if given is not None and not Path(str(model)).exists() and str(model) in given.pretrained:
            model = given.pretrained[str(model)]
        path, wanted = resolve_model_path(str(model), wanted)
        tensors, meta = checkpoint.load_bundle(path)
        name = meta.get("modality")
        if wanted and name and wanted != name:
            raise PolydiffError(f"{path}: a {name!r} model, not a {wanted!r} model")
        mod = given if given is not None else registry().modality(name or wanted)
        config = meta.get("config") or {}
        net = mod.network(config.get("network", {}))
        weights = checkpoint.split_prefix(tensors, "ema" if ema else "model") or checkpoint.split_prefix(tensors, "model")
        if not weights:
            raise PolydiffError(f"{path}: the bundle holds no model weights")
        problem = checkpoint.weight_mismatch(net.state_dict(), weights)
        if problem:
            raise PolydiffError(f"{path}: weights do not fit the {mod.name!r} network: {problem}")
        net.load_state_dict(weights)
        enc = mod.encoder(meta.get("encoder"))
        return cls(mod, net, enc, config, meta, path, device)

    # ------------------------------------------------------------------ sampling
    def sigmas(self, steps: Optional[int] = None, schedule: Optional[str] = None, **schedule_args) -> torch.Tensor:
        from .schedules import get_ladder

        sc = self.config.get("sample", {})
        from .discrete import LADDER_NAME

        default = LADDER_NAME if self.categorical else "karras"
        name = schedule or sc.get("schedule", default)
        args = dict(sc.get("schedule_args", {})) if name == sc.get("schedule", default) else {}
        args.update(schedule_args)
        n = int(steps or sc.get("steps", 20))
        if n < 1:
            raise PolydiffError(f"steps must be at least 1, got {n}")
        try:
            return get_ladder(name)(n, **args).to(self.device)
        except (TypeError, ValueError) as e:
            raise PolydiffError(f"schedule {name!r}: {e}") from None

    @property
    def categorical(self) -> bool:
        """Whether the model's data are categories (tokens) rather than sigma-space vectors."""
        return getattr(self.denoiser, "process", None) is not None

    def _karras_args(self) -> dict:
        """The stored schedule arguments when the model samples on a Karras ladder, else {} (the defaults)."""
        sc = self.config.get("sample", {})
        return sc.get("schedule_args", {}) if sc.get("schedule", "karras") == "karras" else {}

    def sigma_range(self) -> Tuple[float, float]:
        """(sigma_min, sigma_max) of the model's Karras ladder, or the lowest and highest level of a fitted
        one (the defaults 0.002 and 80 otherwise)."""
        sc = self.config.get("sample", {})
        if sc.get("schedule") == "fitted" and sc.get("schedule_args", {}).get("sigmas"):
            levels = [float(v) for v in sc["schedule_args"]["sigmas"] if float(v) > 0]
            return min(levels), max(levels)
        args = self._karras_args()
        return float(args.get("sigma_min", 0.002)), float(args.get("sigma_max", 80.0))

    def sigmas_from(self, sigma_start: float, steps: Optional[int] = None) -> torch.Tensor:
        """A Karras ladder of ``steps`` [the model's] steps from ``sigma_start`` down to 0, with the model's
        sigma_min (at most half of ``sigma_start``) and rho: the ladder of the tasks that start from a partly
        noised input instead of pure noise (SDEdit: denoising, refining an upsampled image)."""
        from .schedules import karras

        rho = float(self._karras_args().get("rho", 7.0))
        n = int(steps or self.config.get("sample", {}).get("steps", 20))
        if n < 1:
            raise PolydiffError(f"steps must be at least 1, got {n}")
        if self.categorical:  # a level in (0, 1]: equal steps from it down to the data
            from .discrete import linear

            if not 0 < float(sigma_start) <= 1:
                raise PolydiffError(f"a categorical start level must be in (0, 1], got {sigma_start}")
            return linear(n, start=float(sigma_start)).to(self.device)
        if not sigma_start > 0:
            raise PolydiffError(f"the start noise level must be positive, got {sigma_start}")
        smin = min(self.sigma_range()[0], float(sigma_start) / 2)
        return karras(n, sigma_min=smin, sigma_max=float(sigma_start), rho=rho).to(self.device)

    def conditions(self, n: int, **options):
        """(cond, known) for ``n`` samples from the modality's ``make_cond``: the condition tensors on the
        model's device, and the masked-conditioning control (:class:`polydiff.sampling.Known`) when the
        options ask for one (a molecule scaffold), else None."""
        made = self.modality.cond_for_sampling(self.encoder, n, **options)
        cond, known = made if isinstance(made, tuple) else (made, None)
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in cond.items()}, known

    def cond(self, n: int, **options) -> Dict[str, torch.Tensor]:
        """The condition tensors of :meth:`conditions`; options that ask for masked conditioning are refused
        here (use :meth:`conditions` or :meth:`sample`)."""
        cond, known = self.conditions(n, **options)
        if known is not None:
            raise PolydiffError("these options add masked conditioning; use Model.conditions or Model.sample")
        return cond

    @torch.no_grad()
    def sample(self, n: int, *, sampler: Optional[str] = None, steps: Optional[int] = None, seed: Optional[int] = None,
               cfg_scale: Optional[float] = None, cond: Optional[dict] = None, callback: Optional[Callable] = None,
               generator: Optional[torch.Generator] = None, schedule: Optional[str] = None,
               sampler_args: Optional[dict] = None, cfg_interval=None, precision: Optional[str] = None,
               known=None, best_of: Optional[int] = None, schedule_args: Optional[dict] = None,
               **options) -> Tuple[torch.Tensor, dict]:
        """Generate ``n`` encoded samples; returns (x, cond). ``options`` go to the modality's make_cond.
        A thin front of :func:`polydiff.sampling.run` (see it for every argument).

        ``best_of`` k (default: the config's ``sample.best_of``, else 1), for a modality with a ``rank``
        hook: up to k draws of the whole batch, keeping for each item the draw its ``rank`` scores highest
        (the earliest among equals); it stops early once every item scores 0, the most a rank gives. Draw 1
        is the plain sample; draw j > 1 is seeded from (seed, j), or continues ``generator``. A ``make_cond``
        that takes a ``draw`` argument gets the draw's 0-based index (e.g. to vary a choice it makes).

        ``cfg_interval`` (lo, hi): apply guidance only at noise levels in (lo, hi] (see
        :func:`polydiff.guidance.cfg_denoiser`); default: the config's ``sample.cfg_interval`` (none: every
        step). ``precision``: ``fp32``, ``bf16`` or ``auto`` (see :data:`PRECISIONS`); default: the config's
        ``sample.precision``, else fp32. ``known``: a :class:`polydiff.sampling.Known` (masked conditioning),
        else the one the modality's ``make_cond`` returns with the options; a ``cond`` passed in with
        ``known`` / ``known_mask`` / ``resample`` entries gets the same (a convenience for callers)."""
        from .sampling import Known, run

        if cond is not None:  # a caller's own cond: known values and their mask in it become the control
            cond = dict(cond)
            if known is None and cond.get("known") is not None:
                if cond.get("known_mask") is None:
                    raise PolydiffError("cond has 'known' values but no 'known_mask'")
                known = Known(cond.pop("known"), cond.pop("known_mask"), int(cond.pop("resample", 1)))
            for key in ("known", "known_mask", "resample"):
                cond.pop(key, None)
        k = int(best_of if best_of is not None else self.config.get("sample", {}).get("best_of", 1))
        if k < 1:
            raise PolydiffError(f"best_of must be at least 1, got {k}")
        if k > 1 and self.modality.rank is None:
            raise PolydiffError(f"modality {self.modality.name!r} has no ranking of its samples; best_of does not "
                                f"apply")

        def draw(j: int):
            s = seed if j == 0 or seed is None else _round_seed(seed, j)
            extra = {"draw": j} if k > 1 and cond is None else {}  # a make_cond taking ``draw`` may vary its choices
            return run(self, n=n, steps=steps, schedule=schedule, schedule_args=schedule_args, sampler=sampler,
                       sampler_args=sampler_args,
                       cond=cond, known=known, cfg_scale=cfg_scale, cfg_interval=cfg_interval, precision=precision,
                       seed=s, generator=generator, callback=callback, **extra, **options)

        x, c = draw(0)
        if k == 1:
            return x, c
        score = self._rank(x, c)
        for j in range(1, k):
            if score is None or bool((score >= 0).all()):
                break
            x2, c2 = draw(j)
            s2 = self._rank(x2, c2)
            better = (s2 > score).to(x.device)
            x = torch.where(better.reshape((-1,) + (1,) * (x.dim() - 1)), x2, x)
            c = {key: (torch.where(better.to(v.device).reshape((-1,) + (1,) * (v.dim() - 1)), c2[key], v)
                       if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n and key in c2 else v)
                 for key, v in c.items()}
            score = torch.maximum(score, s2)
        return x, c

    def _rank(self, x: torch.Tensor, cond: dict) -> Optional[torch.Tensor]:
        """The modality's scores of a batch (higher is better, 0 the most), or None where it cannot rank it."""
        score = self.modality.rank(self.encoder, x.cpu(), {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                                          for k, v in cond.items()})
        return None if score is None else torch.as_tensor(score, dtype=torch.float64).reshape(-1)

    def precision(self, requested: Optional[str] = None) -> str:
        """The sampling precision this model runs with, ``fp32`` or ``bf16``: ``requested`` (fp32, bf16 or
        auto) or else the config's ``sample.precision``, resolved for the model's device."""
        return resolve_precision(requested if requested is not None else self.config.get("sample", {}).get("precision"),
                                 self.device)

    def guided_denoiser(self, scale: Optional[float] = None, interval=None) -> Callable:
        """D with classifier-free guidance at ``scale`` [the config's ``sample.cfg_scale``], inside the noise
        interval ``interval`` [the config's ``sample.cfg_interval``, none: every level]."""
        sc = self.config.get("sample", {})
        scale = float(scale if scale is not None else sc.get("cfg_scale", 1.0))
        interval = interval if interval is not None else sc.get("cfg_interval")
        try:
            return cfg_denoiser(self.denoiser, scale, self.guidance, interval=interval)
        except ValueError as e:
            raise PolydiffError(str(e)) from None

    def generate(self, n: int, **kw) -> List[Any]:
        """Generate and decode ``n`` items (see :meth:`sample` for the options; the modality's
        ``output_options``, such as a decode mode, go to the encoder's ``decode``)."""
        from .modality import split_output_options

        kw, output = split_output_options(self.modality, kw)
        x, cond = self.sample(n, **kw)
        return self.encoder.decode(x.cpu(), {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                             for k, v in cond.items()}, **output)

    def encode(self, items):
        x, cond = self.encoder.encode(items)
        return x.to(self.device), {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in cond.items()}

    @torch.no_grad()
    def score(self, items=None, *, x=None, cond=None, method: str = "elbo", batch_size: int = 4096, **options) -> torch.Tensor:
        """Anomaly scores (higher = more anomalous), one per item, with a registered scorer."""
        from .plugins import registry

        sc = registry().model_scorer(method, self.modality.name)
        if x is None:
            x, cond = self.encode(items)
        cond = cond or {}
        out = []
        for i in range(0, x.shape[0], batch_size):
            c = {k: (v[i:i + batch_size] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in cond.items()}
            out.append(sc.fn(self, x[i:i + batch_size], c, **options).cpu())
        return torch.cat(out)

    def save(self, path) -> Path:
        """Write an inference bundle (weights, config, encoder metadata) to ``path``."""
        meta = {k: v for k, v in self.meta.items() if k not in ("format", "format_version")}
        meta.setdefault("kind", "model")
        meta.update({"modality": self.modality.name, "config": self.config,
                     "encoder": self.encoder.metadata(), "guidance": self.guidance})
        sd = {f"ema.{k}": v for k, v in self.net.state_dict().items()}
        return checkpoint.save_bundle(path, sd, meta)


def load_model(modality: str, model=None, device=None) -> "Model":
    """A :class:`Model` of ``modality`` for task commands: ``model`` is a loaded Model (returned as is), a
    .safetensors path, a pretrained name, or None for the modality's first pretrained model. A model of
    another modality, or no model at all, is a one-line :class:`PolydiffError`."""
    from .plugins import registry

    if isinstance(model, Model):
        return model
    if model is None:
        pretrained = registry().modality(modality).pretrained
        if not pretrained:
            raise PolydiffError(f"no pretrained {modality} model is bundled; give --model PATH "
                                f"(a model.safetensors written by `polydiff train {modality}`)")
        model = next(iter(pretrained))
    m = Model.load(str(model), modality=modality, device=device)
    if m.modality.name != modality:
        raise PolydiffError(f"{model}: a {m.modality.name!r} model, not a {modality!r} model")
    return m


def _init_model(modality: Modality, init) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The float32 (EMA) weights and the metadata of the model that ``train --init`` starts from: the model
    loaded as for sampling (so a bundle that does not load is refused the same way, before anything is
    written)."""
    model = Model.load(init, modality=modality, device="cpu")
    return model.net.state_dict(), model.meta


def train_modality(modality: Modality, *, data=None, recipe: Optional[str] = None, steps: Optional[int] = None,
                   out=None, resume: bool = False, overrides: Optional[dict] = None, device=None,
                   progress: bool = True, strict: bool = False, init=None, callbacks=()) -> dict:
    """Train ``modality`` on a file/folder (``data``) or a recipe's dataset; returns the Trainer's summary.

    ``strict``: the encoder's ``read`` fails on the first unusable record instead of skipping it (only for
    encoders whose ``read`` takes a ``strict`` argument).

    ``init``: fine-tune a trained model (a pretrained name or a bundle path) instead of starting from random
    weights. Its data encoder is kept as it is (sample rate, classes, vocabulary: the data is encoded the
    way the model expects, not refitted), and so are its network, parameterisation and sampling defaults;
    the recipe and ``overrides`` set the training schedule. The run starts at step 0 from the model's
    (EMA) weights. To continue an interrupted fine-tuning run, give the same ``init`` with ``resume``.

    ``callbacks``: further :class:`polydiff.training.Callback` objects, called after the run folder's own."""
    from .plugins import registry  # noqa: F401  (the registry is needed by the encoder of some modalities)

    rec = {}
    if recipe is not None:
        if recipe not in modality.recipes:
            raise UnknownName(f"modality {modality.name!r} has no recipe {recipe!r}; recipes: "
                              f"{', '.join(sorted(modality.recipes)) or 'none'}")
        rec = modality.recipes[recipe]
    elif data is not None and init is None and modality.data_recipe:
        rec = {"config": modality.recipes[modality.data_recipe].get("config")}  # the user's data, not the recipe's
    config = merge_config(default_config(modality.default_config), modality.default_config, rec.get("config"), overrides)
    if steps is not None:
        config["train"]["steps"] = int(steps)
    start = _init_model(modality, init) if init is not None else None
    if start is not None:
        meta = start[1]
        base = meta.get("config") or {}
        for key in ("parameterisation", "sigma_data"):
            if key in base:
                config[key] = copy.deepcopy(base[key])
        # the model's network, with what the recipe or the overrides add (new layers start from their
        # initialization; a changed layer's weights no longer fit and are refused below)
        config["network"] = merge_config(base.get("network") or {}, (rec.get("config") or {}).get("network"),
                                         (overrides or {}).get("network"))
        config["sample"] = merge_config(config.get("sample") or {}, base.get("sample"))
        encoder = modality.encoder(meta.get("encoder"))
    else:
        from .modality import fresh_encoder

        encoder = fresh_encoder(modality, config)
    if data is not None:
        from .modality import _accepts

        if strict and not _accepts(encoder.read, "strict"):
            raise PolydiffError(f"--strict: the {modality.name!r} reader has no strict mode")
        try:
            items = encoder.read(data, strict=True) if strict else encoder.read(data)
        except PolydiffError:
            raise
        except ValueError as e:
            raise InputError(f"{data}: {e}") from None
    elif rec.get("data"):
        ds = rec["data"]
        if ds not in modality.datasets:
            raise UnknownName(f"recipe {recipe!r} needs dataset {ds!r}, which modality {modality.name!r} lacks")
        items = modality.datasets[ds]()
    else:
        raise PolydiffError(f"give --data PATH or --recipe NAME (recipes of {modality.name!r}: "
                            f"{', '.join(sorted(modality.recipes)) or 'none'})")
    if start is None:
        encoder.fit(items)
    x, cond = encoder.encode(items)
    if device is not None:
        device = str(default_device(device))  # validates the name and that the device exists
    from .training import modality_trainer, run_folder

    trainer, new_layers = modality_trainer(modality, encoder, x, cond, config,
                                           run_folder(Path(out or f"runs/{modality.name}"), progress=progress)
                                           + list(callbacks),
                                           device=device,
                                           init_weights=start[0] if start is not None else None, init_name=str(init))
    summary = trainer.fit(resume=resume)
    if start is not None:
        summary["init"] = {"model": str(init), "step": start[1].get("step"), "new_layers": new_layers}
    return summary
