"""Training: one readable loop from encoded tensors to a checkpoint and an inference bundle.

Each step draws a batch, noise levels from the training distribution and Gaussian noise, optionally
drops guided conditions (the training half of classifier-free guidance), and minimises the weighted
denoising loss of :func:`polydiff.noising.denoising_loss` through the adapter named by
``config["parameterisation"]``. AdamW with a linear learning-rate warm-up, gradient clipping and an
exponential moving average (EMA) of the weights.

Reproducibility. Every random number of step ``s`` on rank ``r`` comes from generators seeded with a
hash of ``(seed, s, r)``; nothing carries over from one step to the next except the weights, the EMA
and the optimizer state. A run resumed from a checkpoint therefore computes bit-for-bit the same
losses as the uninterrupted run (on the same device and software). The checkpoint also holds the
process's RNG states, restored on resume.

The loop itself writes nothing: what a run does besides training is a :class:`Callback`. Without
callbacks a run trains in memory (the anomaly detector's network scorers); ``polydiff train`` installs
:func:`run_folder`'s three, which write a run folder (by rank 0 only):

* ``checkpoint.safetensors`` (:class:`Checkpointer`) - everything needed to resume: ``model.*``, ``ema.*``, ``optim.*`` and
  ``rng.*`` tensors; JSON with ``kind="checkpoint"``, modality, config, encoder metadata, step,
  guidance, optimizer param groups and RNG states. Written every ``ckpt_every`` steps and at the end.
* ``model.safetensors`` - the inference bundle: ``model.*`` and ``ema.*`` with the same JSON but
  ``kind="model"``. Written with every checkpoint.
* ``config.json`` - a readable copy of the full config.
* ``metrics.jsonl`` (:class:`MetricsLog`) - one JSON line per logged step: step, loss, lr, grad_norm, seconds.

and :class:`ProgressBar` shows a progress bar.

All bundles go through :func:`polydiff.checkpoint.save_bundle` (atomic rename, no pickle). If the loss
or the gradient norm stops being finite, :class:`TrainingDiverged` is raised before the bad state can
reach the disk, so the last checkpoint stays the last good one.

Distributed data parallel: launched with ``torchrun --nproc_per_node=N``, the same code initialises
the process group (gloo on CPU, nccl on CUDA), wraps the network in ``DistributedDataParallel``, gives
each rank its own shard of the data (indices ``rank::world_size``) and ``batch_size // world_size``
samples per step; the callbacks let only rank 0 write files, logs and the progress bar.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from . import checkpoint
from .errors import PolydiffError
from .guidance import drop_conditions
from .noising import WEIGHTINGS, denoising_loss
from .discrete import categorical_loss, process_of, sample_levels
from .embedding import embedding_loss, spec_of
from .precond import denoiser_for
from .schedules import get_training_distribution

__all__ = ["default_train_config", "Trainer", "init_network", "modality_trainer", "train", "TrainingDiverged",
           "Callback", "TrainState", "Checkpointer", "MetricsLog", "ProgressBar", "run_folder", "CHECKPOINT_NAME",
           "MODEL_NAME", "METRICS_NAME", "CONFIG_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"

# Config keys that define the model itself: a checkpoint cannot be resumed under different values.
_MODEL_KEYS = ("parameterisation", "sigma_data", "network")
# Training keys that may change between a run and its resumption without comment.
_FREE_TRAIN_KEYS = {"steps", "log_every", "ckpt_every"}


def default_train_config() -> dict:
    """The training section of a model config, with its defaults."""
    return {
        "steps": 2000,              # optimizer steps in all (a resumed run continues up to this number)
        "batch_size": 256,          # global batch; split evenly over the ranks of a distributed run
        "lr": 2e-4,                 # AdamW learning rate after warm-up
        "weight_decay": 0.0,        # AdamW decoupled weight decay
        "warmup": 100,              # steps of linear learning-rate warm-up from lr / warmup to lr
        "ema_decay": 0.999,         # EMA decay, warmed up as min(ema_decay, (1 + step) / (10 + step))
        "grad_clip": 1.0,           # clip the global gradient norm to this value (0 or None: no clipping)
        "bf16": False,              # run forward pass and loss under bfloat16 autocast
        "seed": 0,                  # all per-step randomness derives from (seed, step, rank)
        "sigma_dist": "lognormal",  # training noise-level distribution (polydiff.schedules)
        "sigma_dist_args": {},      # keyword arguments of that distribution, e.g. {"p_mean": -1.2}
        "weighting": "edm",         # loss weighting: edm, min_snr, snr or uniform (polydiff.noising)
        "min_snr_gamma": 5.0,       # gamma of the min_snr weighting
        "cond_drop": 0.1,           # probability of replacing each guided condition by its null value
        "log_every": 50,            # steps between lines of metrics.jsonl
        "ckpt_every": 500,          # steps between checkpoints (one is also written at the end)
    }


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; nothing of the bad state was saved.

    ``step`` is the step that diverged, ``checkpoint`` the path of the last good checkpoint (or None)
    and ``checkpoint_step`` its step.
    """

    def __init__(self, message: str, step: int, checkpoint: Optional[Path] = None,
                 checkpoint_step: Optional[int] = None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
        self.checkpoint_step = checkpoint_step


def _jsonable(obj):
    """A deep copy of ``obj`` as JSON would return it (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj))


def _seed_for(seed: int, step: int, rank: int, stream: str) -> int:
    """A 63-bit seed that depends only on (seed, step, rank, stream)."""
    digest = hashlib.blake2b(f"polydiff/{seed}/{step}/{rank}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def init_network(factory, network_config: dict, seed: int):
    """``factory(network_config)`` with its initial weights drawn from ``seed`` (the training seed), not from
    the global generator, which it leaves as it was: the same seed gives the same network in any process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(int(seed), 0, 0, "init"))
        return factory(network_config)


def modality_trainer(modality, encoder, x: torch.Tensor, cond: Optional[Dict[str, torch.Tensor]], config: dict,
                     callbacks: Sequence["Callback"] = (), *, device=None,
                     init_weights: Optional[Dict[str, torch.Tensor]] = None, init_name: str = "the initial model"):
    """The one place a training run of a modality is assembled (``polydiff train``, the anomaly detector's
    network scorers, the plugin conformance kit, tools): the data-dependent settings (``configure``), the
    network initialised from the training seed, optional starting weights (fine-tuning: layers they lack keep
    their initialisation, anything else that does not fit is refused), and a :class:`Trainer` with the
    modality's guidance and augmentation. ``callbacks`` go to the Trainer as they are: none trains in
    memory; :func:`run_folder` gives the files of ``polydiff train``. Returns ``(trainer, new_layers)``;
    call ``trainer.fit()``."""
    if modality.configure is not None:  # data-dependent settings (columns, classes, vocabulary)
        config = modality.configure(config, encoder)
    net = init_network(modality.network, config.get("network", {}), config.get("train", {}).get("seed", 0))
    new_layers = []
    if init_weights is not None:
        problem = checkpoint.weight_mismatch(net.state_dict(), init_weights, allow_missing=True)
        if problem:
            raise PolydiffError(f"{init_name}: its weights do not fit the {modality.name!r} network: {problem}")
        new_layers = sorted(net.load_state_dict(init_weights, strict=False).missing_keys)
    trainer = Trainer(net, x, cond, config, callbacks, modality=modality.name, encoder_meta=encoder.metadata(),
                      guidance=modality.guidance, device=device, augment=modality.augment)
    return trainer, new_layers


# ------------------------------------------------------------------------------------------------
# callbacks: what a run does besides training (files, logs, a progress bar)
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What a :class:`Callback` sees of a running fit. ``step`` counts completed updates; ``loss``, ``lr``,
    ``grad_norm`` are those of the latest update (``loss`` is None before the first); ``seconds`` is the
    training time so far, including the time before a resume. ``net``, ``opt`` and ``trainer.ema`` are live:
    read them, do not change them. ``start`` is the step the fit began at (> 0 after a resume)."""
    trainer: "Trainer"
    net: nn.Module
    opt: torch.optim.Optimizer
    steps: int
    start: int = 0
    resumed: bool = False
    step: int = 0
    loss: Optional[float] = None
    lr: float = 0.0
    grad_norm: float = 0.0
    seconds: float = 0.0

    @property
    def is_main(self) -> bool:
        return self.trainer.is_main


class Callback:
    """Something a :class:`Trainer` calls during :meth:`Trainer.fit`; every method is optional.

    * ``restore(state) -> (step, loss, seconds)`` - only for ``fit(resume=True)``: load the weights, EMA,
      optimizer and RNG states of an earlier run into ``state`` (the first callback that has it is used).
    * ``on_start(state)`` - the network, optimizer and EMA exist (restored if resuming); nothing trained yet.
    * ``on_step(state)`` - after every update (every rank; write files on ``state.is_main`` only).
    * ``on_end(state)`` - after the last update, also when there was nothing left to train.
    * ``last_good()`` - ``(path, step)`` of the newest saved state, named when training diverges.
    * ``summary()`` - entries added to the dict :meth:`Trainer.fit` returns.
    * ``close()`` - always called at the end of ``fit``, after an error too.
    """


class ProgressBar(Callback):
    """A tqdm bar over the steps (rank 0 only), with the loss and learning rate every ``train.log_every``."""

    def on_start(self, state: TrainState):
        from tqdm.auto import tqdm

        self._every = int(state.trainer.train_cfg["log_every"])
        self._bar = tqdm(total=state.steps, initial=min(state.start, state.steps),
                         desc=f"train {state.trainer.modality}", unit="step", disable=not state.is_main,
                         dynamic_ncols=True)

    def on_step(self, state: TrainState):
        self._bar.update(1)
        if state.step % self._every == 0 or state.step == state.steps:
            self._bar.set_postfix(loss=f"{state.loss:.4f}", lr=f"{state.lr:.2e}")

    def close(self):
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()
            self._bar = None


class MetricsLog(Callback):
    """``metrics.jsonl``: one JSON line (step, loss, lr, grad_norm, seconds) every ``every`` steps (default
    ``train.log_every``) and at the last step, written by rank 0. A resumed run keeps the lines up to its
    starting step and drops the rest (lines a killed run wrote after its last checkpoint)."""

    def __init__(self, path, every: Optional[int] = None):
        self.path = Path(path)
        self.every = every
        self._file = None

    def on_start(self, state: TrainState):
        self._every = int(self.every or state.trainer.train_cfg["log_every"])
        if not state.is_main:
            return
        kept = []
        if state.resumed and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the previous run was killed
                if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= state.start:
                    kept.append(line + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(self.path, "".join(kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def on_step(self, state: TrainState):
        if self._file is not None and (state.step % self._every == 0 or state.step == state.steps):
            self._file.write(json.dumps({"step": state.step, "loss": state.loss, "lr": state.lr,
                                         "grad_norm": state.grad_norm, "seconds": round(state.seconds, 4)}) + "\n")
            self._file.flush()

    def summary(self) -> dict:
        return {"metrics_path": str(self.path)}

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class Checkpointer(Callback):
    """The run folder's bundles (rank 0 writes): ``config.json`` at the start; ``checkpoint.safetensors``
    (weights, EMA, optimizer and RNG states: everything to resume) and ``model.safetensors`` (the inference
    bundle) every ``every`` steps (default ``train.ckpt_every``) and at the end. ``restore`` resumes from
    the checkpoint, refusing one of a different model."""

    def __init__(self, folder, every: Optional[int] = None):
        self.folder = Path(folder)
        self.every = every
        self.checkpoint_path = self.folder / CHECKPOINT_NAME
        self.model_path = self.folder / MODEL_NAME
        self.config_path = self.folder / CONFIG_NAME
        self._last = (None, None)
        self._saved_at = None

    def restore(self, state: TrainState):
        tr, path = state.trainer, self.checkpoint_path
        if not path.exists():
            raise PolydiffError(f"cannot resume: no checkpoint at {path}; train without resume to start from scratch")
        try:
            tensors, meta = checkpoint.load_bundle(path)
        except checkpoint.BundleError as e:
            raise PolydiffError(f"cannot resume: {e}") from None
        if meta.get("kind") != "checkpoint":
            raise PolydiffError(f"cannot resume from {path}: it is a {meta.get('kind')!r} bundle, not a training checkpoint")
        tr.check_compatible(meta, path)

        model_sd = checkpoint.split_prefix(tensors, "model")
        problem = checkpoint.weight_mismatch(state.net.state_dict(), model_sd)
        if problem:
            raise PolydiffError(f"cannot resume from {path}: its weights do not fit this network ({problem})")
        state.net.load_state_dict(model_sd)
        ema_sd = checkpoint.split_prefix(tensors, "ema")
        with torch.no_grad():
            for k, e in tr.ema.items():
                e.copy_(ema_sd.get(k, model_sd[k]))
        try:
            checkpoint.load_optimizer_state(state.opt, tensors, meta.get("optim") or {})
        except (ValueError, KeyError) as e:
            raise PolydiffError(f"cannot resume from {path}: its optimizer state does not fit this network ({e})") from None
        checkpoint.restore_rng_state(tensors, meta.get("rng") or {})
        step = int(meta["step"])
        self._last = (path, step)
        self._saved_at = step
        return step, meta.get("loss"), float(meta.get("seconds") or 0.0)

    def on_start(self, state: TrainState):
        self._every = int(self.every or state.trainer.train_cfg["ckpt_every"])
        if state.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_text(self.config_path,
                                         json.dumps(state.trainer.config, indent=2, sort_keys=True) + "\n")

    def on_step(self, state: TrainState):
        if state.step % self._every == 0 or state.step == state.steps:
            self._save(state)

    def on_end(self, state: TrainState):
        if self._saved_at != state.step or (state.is_main and not self.model_path.exists()):
            self._save(state)  # nothing was trained (already at train.steps): the bundles exist and are current

    def _save(self, state: TrainState):
        tr = state.trainer
        tr.check_weights(state)  # on every rank: the replicas are identical, so they all take the same branch
        self._saved_at = state.step
        if not state.is_main:
            return
        tensors = {f"model.{k}": v for k, v in state.net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in tr.ema.items()})
        meta = tr.bundle_meta("checkpoint", state.step)
        meta["loss"] = state.loss
        meta["seconds"] = round(float(state.seconds), 4)
        # optimizer and random generators (per-step randomness is re-derived from the seed; these restore the rest)
        opt_tensors, meta["optim"] = checkpoint.optimizer_state(state.opt)
        rng_tensors, meta["rng"] = checkpoint.rng_state()
        tensors.update(opt_tensors)
        tensors.update(rng_tensors)
        checkpoint.save_bundle(self.checkpoint_path, tensors, meta)
        self._last = (self.checkpoint_path, int(state.step))
        model_tensors = {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}
        checkpoint.save_bundle(self.model_path, model_tensors, tr.bundle_meta("model", state.step))

    def last_good(self):
        return self._last

    def summary(self) -> dict:
        return {"model_path": str(self.model_path), "checkpoint_path": str(self.checkpoint_path)}


def run_folder(out_dir, *, progress: bool = False) -> list:
    """The callbacks of a training run kept in a folder, as ``polydiff train`` installs them: the checkpoint
    and model bundles with ``config.json`` (:class:`Checkpointer`), ``metrics.jsonl`` (:class:`MetricsLog`)
    and, with ``progress``, a :class:`ProgressBar`."""
    out = Path(out_dir)
    callbacks = [Checkpointer(out), MetricsLog(out / METRICS_NAME)]
    return callbacks + [ProgressBar()] if progress else callbacks


def _env_world() -> tuple:
    """(rank, local_rank, world_size) from the torchrun environment (0, 0, 1 when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return rank, local, world


class Trainer:
    """Train ``net`` as a denoiser on the encoded data ``x`` (with conditions ``cond``).

    Parameters
    ----------
    net : nn.Module called as ``net(x_in, c_noise, **cond)``.
    x : float tensor [N, ...] of encoded training data.
    cond : dict of tensors; those whose first dimension is N are indexed per sample (labels, masks),
        anything else is passed to the network unchanged.
    config : the full model config (``parameterisation``, ``sigma_data``, ``network``, ``train``,
        ``sample``); missing training keys take :func:`default_train_config` values.
    callbacks : :class:`Callback` objects called during :meth:`fit` (files, logs, a progress bar; see
        :func:`run_folder` for those of ``polydiff train``). None or empty: the run trains in memory and
        writes nothing (the weights are ``net`` and :attr:`ema` afterwards, the loss is returned).
    modality, encoder_meta : stored in the bundles so the model can be loaded and decoded later.
    guidance : ``{condition key: null value}`` for classifier-free guidance; the keys are dropped
        with probability ``train.cond_drop``. None: no dropping.
    augment : ``augment(x0, cond, config, generator) -> cond``, called on every batch before the guided
        conditions are dropped: conditions computed from the clean batch itself (the low-resolution copy a
        super-resolution network is conditioned on). Its randomness must come from ``generator``, which is
        seeded per step, so that a resumed run repeats the uninterrupted one.
    device : where to train; default CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
    """

    def __init__(self, net: nn.Module, x: torch.Tensor, cond: Optional[Dict[str, torch.Tensor]], config: dict,
                 callbacks: Optional[Sequence[Callback]] = None, *, modality: str, encoder_meta: dict,
                 guidance: Optional[dict] = None, device=None, augment: Optional[Callable] = None):
        if isinstance(callbacks, (str, os.PathLike)):
            raise TypeError("Trainer(..., callbacks): give callbacks, e.g. run_folder(path), not a folder")
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
            raise PolydiffError("training data must be a non-empty tensor [N, ...]")
        self.config = self._normalise_config(config)
        try:
            self.process = process_of(self.config)
        except (ValueError, KeyError, TypeError) as e:
            raise PolydiffError(f"the model config's process: {e}") from None
        self.embedding = spec_of(self.config)
        if self.process is None and self.embedding is None and not x.is_floating_point():
            raise PolydiffError(f"training data must be a float tensor, got {x.dtype}")
        if self.embedding is not None and x.is_floating_point():
            raise PolydiffError(f"an embedding model trains on integer tokens, got {x.dtype}")
        if self.process is not None:
            if x.is_floating_point() or x.is_complex():
                raise PolydiffError(f"categorical training data must be an integer tensor of tokens, got {x.dtype}")
            if int(x.min()) < 0 or int(x.max()) >= self.process.vocab:
                raise PolydiffError(f"tokens must lie in [0, {self.process.vocab - 1}], got {int(x.min())}..{int(x.max())}")
        self.net = net
        self.x = x.detach()
        self.cond = dict(cond or {})
        self.train_cfg = self.config["train"]
        self.callbacks = list(callbacks or ())
        self.modality = str(modality)
        self.encoder_meta = _jsonable(encoder_meta or {})
        self.guidance = _jsonable(guidance) if guidance else None
        self.augment = augment
        self.rank, self.local_rank, self.world_size = _env_world()
        if device is None:
            if torch.cuda.is_available():
                device = f"cuda:{self.local_rank}" if self.world_size > 1 else "cuda"
            else:
                device = "cpu"
        self.device = torch.device(device)
        #: EMA of ``net.state_dict()`` (same keys), available after :meth:`fit` has started
        self.ema: Dict[str, torch.Tensor] = {}
        self.step = 0

    # ------------------------------------------------------------------------------------------
    # configuration
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _normalise_config(config: dict) -> dict:
        try:
            cfg = _jsonable(config or {})
        except TypeError as e:
            raise PolydiffError(f"the model config must be JSON-serialisable: {e}") from None
        cfg.setdefault("parameterisation", "edm")
        cfg.setdefault("sigma_data", 1.0)
        train_cfg = default_train_config()
        unknown = sorted(set(cfg.get("train") or {}) - set(train_cfg))
        if unknown:
            warnings.warn(f"unknown training settings ignored: {', '.join(unknown)}", stacklevel=3)
        train_cfg.update(cfg.get("train") or {})
        cfg["train"] = train_cfg
        t = train_cfg
        for key in ("steps", "batch_size", "log_every", "ckpt_every"):
            if int(t[key]) < 1 and not (key == "steps" and int(t[key]) == 0):
                raise PolydiffError(f"train.{key} must be a positive integer, got {t[key]!r}")
        if t["weighting"] not in WEIGHTINGS:
            raise PolydiffError(f"unknown loss weighting {t['weighting']!r}; known: {', '.join(WEIGHTINGS)}")
        if not 0 <= float(t["cond_drop"]) < 1:
            raise PolydiffError(f"train.cond_drop must be in [0, 1), got {t['cond_drop']!r}")
        if not 0 <= float(t["ema_decay"]) < 1:
            raise PolydiffError(f"train.ema_decay must be in [0, 1), got {t['ema_decay']!r}")
        try:
            get_training_distribution(t["sigma_dist"])
        except ValueError as e:
            raise PolydiffError(str(e)) from None
        return cfg

    def lr_at(self, step: int) -> float:
        """Learning rate of the update with 0-based index ``step`` (linear warm-up, then constant)."""
        lr, warmup = float(self.train_cfg["lr"]), int(self.train_cfg["warmup"])
        return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr

    def ema_decay_at(self, done: int) -> float:
        """EMA decay applied after ``done`` completed updates (warmed up for the first steps)."""
        return min(float(self.train_cfg["ema_decay"]), (1 + done) / (10 + done))

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train up to ``train.steps``; with ``resume=True`` continue from the state a callback restores (the
        run folder's checkpoint, :class:`Checkpointer`).

        Returns ``{"step", "loss"}`` and what the callbacks add (the run folder's ``model_path``,
        ``checkpoint_path``, ``metrics_path``, as strings).
        """
        if resume and not any(hasattr(cb, "restore") for cb in self.callbacks):
            raise PolydiffError("cannot resume a run trained in memory (no run folder); give a run folder")
        created_group = self._init_distributed()
        try:
            return self._fit(resume)
        finally:
            for cb in self.callbacks:
                if hasattr(cb, "close"):
                    cb.close()
            self._release_ddp()
            if created_group:
                import torch.distributed as dist

                dist.destroy_process_group()

    def _release_ddp(self):
        # The DDP wrapper sits in reference cycles (its hooks point back at it), so it is freed by the
        # garbage collector at some later time, possibly during interpreter shutdown, when its reducer's
        # threads can no longer be joined cleanly. Drop it now, while the process group still exists.
        if getattr(self, "_ddp", None) is not None:
            self._ddp = None
            import gc

            gc.collect()

    def _init_distributed(self) -> bool:
        if self.world_size <= 1:
            return False
        import torch.distributed as dist

        if dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            return False
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        return True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _fit(self, resume: bool) -> dict:
        t = self.train_cfg
        steps, seed = int(t["steps"]), int(t["seed"])
        dev, world, rank = self.device, self.world_size, self.rank

        if t["batch_size"] < world:
            raise PolydiffError(f"train.batch_size ({t['batch_size']}) is smaller than the number of ranks ({world})")
        local_batch = int(t["batch_size"]) // world
        if self.is_main and int(t["batch_size"]) % world:
            warnings.warn(f"train.batch_size {t['batch_size']} is not a multiple of {world} ranks; "
                          f"using {local_batch} per rank", stacklevel=3)

        # this rank's shard of the data
        n_all = self.x.shape[0]
        if n_all < world:
            raise PolydiffError(f"{n_all} training items cannot be shared by {world} ranks")
        per_sample = {k for k, v in self.cond.items() if isinstance(v, torch.Tensor) and v.ndim > 0
                      and v.shape[0] == n_all}

        def local(v, per_item=True):
            if not isinstance(v, torch.Tensor):
                return v
            return (v[rank::world] if per_item and world > 1 else v).to(dev)

        x_local = local(self.x)
        cond_local = {k: local(v, k in per_sample) for k, v in self.cond.items()}
        n_local = x_local.shape[0]

        net = self.net.to(dev)
        was_training = net.training
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        if not params:
            raise PolydiffError("the network has no trainable parameters")
        opt = torch.optim.AdamW(params, lr=self.lr_at(0), weight_decay=float(t["weight_decay"]))
        model = net
        if world > 1:  # wrapping broadcasts rank 0's weights, so the replicas (and EMAs below) start equal
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
            self._ddp = model  # released in fit() before the process group goes away
        with torch.no_grad():
            self.ema = {k: v.detach().clone() for k, v in net.state_dict().items()}

        state = TrainState(self, net, opt, steps)
        start, last_loss, seconds0 = 0, None, 0.0
        if resume:  # every rank reads the same checkpoint
            restorer = next(cb for cb in self.callbacks if hasattr(cb, "restore"))
            start, last_loss, seconds0 = restorer.restore(state)
        self.step = start
        state.start, state.resumed, state.step, state.loss, state.seconds = start, resume, start, last_loss, seconds0
        D = denoiser_for(model, self.config)
        self._emit("on_start", state)

        sample_sigma = get_training_distribution(t["sigma_dist"])
        sigma_args = dict(t["sigma_dist_args"] or {})
        weighting, gamma = t["weighting"], float(t["min_snr_gamma"])
        sigma_data = float(self.config["sigma_data"])
        clip = float(t["grad_clip"]) if t["grad_clip"] else 0.0
        cond_drop = float(t["cond_drop"])
        use_bf16 = bool(t["bf16"])

        t0 = time.perf_counter()
        try:
            for step in range(start, steps):
                # --- all randomness of this step comes from (seed, step, rank) -------------------
                g = torch.Generator().manual_seed(_seed_for(seed, step, rank, "batch"))
                self._seed_global(_seed_for(seed, step, rank, "global"))  # dropout etc. inside the network
                idx = torch.randint(n_local, (local_batch,), generator=g)
                if self.process is None:
                    sigma = sample_sigma(local_batch, generator=g, **sigma_args)
                    extra = (int(self.embedding["dim"]),) if self.embedding is not None else ()
                    noise = torch.randn((local_batch,) + tuple(x_local.shape[1:]) + extra, generator=g)
                else:  # categorical: the level now, the corruption itself drawn from g inside the loss
                    sigma, noise = sample_levels(local_batch, generator=g), None
                idx_d = idx.to(dev)
                x0 = x_local[idx_d]
                cb = {k: (v[idx_d] if k in per_sample else v) for k, v in cond_local.items()}
                if self.augment is not None:
                    cb = self.augment(x0, cb, self.config, g)
                if cond_drop > 0 and self.guidance:
                    cb = drop_conditions(cb, cond_drop, self.guidance, generator=g)
                sigma = sigma.to(dev, x0.dtype if x0.is_floating_point() else torch.float32)
                if noise is not None:
                    noise = noise.to(dev, x0.dtype if x0.is_floating_point() else torch.float32)

                # --- one update ---------------------------------------------------------------
                lr = self.lr_at(step)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    if self.embedding is not None:
                        loss = embedding_loss(D, model, x0, sigma, noise, cb, weighting=weighting,
                                              sigma_data=sigma_data, gamma=gamma,
                                              rounding=float(self.embedding.get("rounding", 1.0)),
                                              loss=str(self.embedding.get("loss", "mse")),
                                              self_cond=bool(self.embedding.get("self_cond", False))).mean()
                    elif self.process is None:
                        loss = denoising_loss(D, x0, sigma, noise, cb, weighting=weighting, sigma_data=sigma_data,
                                              gamma=gamma).mean()
                    else:
                        loss = categorical_loss(D, self.process, x0, sigma, cb, generator=g).mean()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
                loss_value, gn_value, finite = self._reduce(loss, grad_norm)
                done = step + 1
                if not finite:
                    self._diverged(done, loss_value, gn_value)
                opt.step()
                with torch.no_grad():
                    decay = self.ema_decay_at(done)
                    for k, v in net.state_dict().items():
                        e = self.ema[k]
                        if e.is_floating_point():
                            e.lerp_(v.detach().to(e.dtype), 1.0 - decay)
                        else:
                            e.copy_(v)
                self.step, last_loss = done, loss_value
                state.step, state.loss, state.lr, state.grad_norm = done, loss_value, lr, gn_value
                state.seconds = seconds0 + time.perf_counter() - t0
                self._emit("on_step", state)
        finally:
            net.train(was_training)

        state.seconds = seconds0 + time.perf_counter() - t0
        self.check_weights(state)
        self._emit("on_end", state)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        summary = {"step": self.step, "loss": last_loss}
        for cb in self.callbacks:
            if hasattr(cb, "summary"):
                summary.update(cb.summary())
        return summary

    def _emit(self, event: str, state: TrainState):
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(state)

    def _seed_global(self, s: int):
        """Seed the default generators of the CPU and of the training device (cheaper than torch.manual_seed)."""
        torch.default_generator.manual_seed(s)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(s)

    def _reduce(self, loss: torch.Tensor, grad_norm: torch.Tensor):
        """(mean loss over ranks, grad norm, all finite on every rank)."""
        loss = loss.detach().float()
        grad_norm = grad_norm.detach().float()
        if self.world_size > 1:
            import torch.distributed as dist

            bad = torch.stack([(~torch.isfinite(loss)).float(), (~torch.isfinite(grad_norm)).float()])
            buf = torch.cat([loss.reshape(1), bad]).to(self.device)
            dist.all_reduce(buf)
            buf = buf.cpu()
            return float(buf[0]) / self.world_size, float(grad_norm), bool(buf[1:].sum() == 0)
        lv, gv = float(loss), float(grad_norm)
        return lv, gv, math.isfinite(lv) and math.isfinite(gv)

    def _diverged(self, step: int, loss: float, grad_norm: float):
        path, ck_step = None, None
        for cb in self.callbacks:
            if hasattr(cb, "last_good") and cb.last_good()[0] is not None:
                path, ck_step = cb.last_good()
        where = (f"the last good checkpoint is {path} (step {ck_step})" if path is not None
                 else f"no checkpoint was written before it (train.ckpt_every={self.train_cfg['ckpt_every']})")
        raise TrainingDiverged(
            f"training diverged at step {step}: loss={loss}, grad_norm={grad_norm}; {where}. "
            "Nothing was saved from the diverged step; lower train.lr, raise train.warmup or check the data, "
            "then resume from the checkpoint or start again.", step, path, ck_step)

    def check_weights(self, state: TrainState):
        """Raise :class:`TrainingDiverged` if a weight is not finite (called before any state is saved)."""
        for v in state.net.state_dict().values():
            if v.is_floating_point() and not torch.isfinite(v).all():
                self._diverged(state.step, float("nan") if state.loss is None else state.loss, float("nan"))

    def bundle_meta(self, kind: str, step: int) -> dict:
        """The JSON header of a bundle of this run (``kind`` "checkpoint" or "model") at ``step``."""
        from . import __version__

        return {"kind": kind, "modality": self.modality, "config": self.config, "encoder": self.encoder_meta,
                "step": int(step), "guidance": self.guidance, "polydiff_version": __version__}

    def check_compatible(self, meta: dict, path: Path):
        """Refuse to resume from a checkpoint of a different model (warn about changed training settings)."""
        old = meta.get("config") or {}
        problems = []
        if meta.get("modality") != self.modality:
            problems.append(f"modality {meta.get('modality')!r} vs {self.modality!r}")
        for key in _MODEL_KEYS:
            if old.get(key) != self.config.get(key):
                problems.append(f"{key} {json.dumps(old.get(key))} vs {json.dumps(self.config.get(key))}")
        old_enc, new_enc = meta.get("encoder") or {}, self.encoder_meta or {}
        if any(k not in new_enc or old_enc[k] != new_enc[k] for k in old_enc):
            problems.append("the data encoder's metadata differs (different data or encoder settings)")
        if problems:
            raise PolydiffError(f"cannot resume from {path}: the checkpoint was trained with a different model: "
                                + "; ".join(problems))
        added = sorted(set(new_enc) - set(old_enc))
        if added and self.is_main:  # a newer encoder records more about the same data: the weights still fit
            warnings.warn("resuming a checkpoint whose data encoder did not record " + ", ".join(added)
                          + "; the run's new bundles will", stacklevel=4)
        old_train = old.get("train") or {}
        changed = [f"{k} {old_train.get(k)!r} -> {v!r}" for k, v in self.train_cfg.items()
                   if k not in _FREE_TRAIN_KEYS and k in old_train and old_train[k] != v]
        if changed and self.is_main:
            warnings.warn("resuming with changed training settings (the run will not match an uninterrupted "
                          "one): " + ", ".join(changed), stacklevel=4)


def train(net: nn.Module, x: torch.Tensor, cond: Optional[Dict[str, torch.Tensor]], config: dict, out_dir=None, *,
          resume: bool = False, progress: bool = False, **kwargs) -> dict:
    """``Trainer(net, x, cond, config, run_folder(out_dir, progress=progress), **kwargs).fit(resume=resume)``;
    ``out_dir=None`` trains in memory."""
    callbacks = run_folder(out_dir, progress=progress) if out_dir is not None else ([ProgressBar()] if progress else [])
    return Trainer(net, x, cond, config, callbacks, **kwargs).fit(resume=resume)
