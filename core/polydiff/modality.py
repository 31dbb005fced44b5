"""What a plugin registers: a :class:`Modality`, and the :class:`Encoder` interface it provides.

A modality bundles everything the core needs to train, sample, score and evaluate one kind of data:

* an **encoder factory** ``encoder(metadata: dict | None) -> Encoder`` — files <-> tensors. With
  ``None`` it returns a fresh encoder to :meth:`Encoder.fit` on training data; with the JSON metadata
  stored in a checkpoint it rebuilds the exact encoder the model was trained with. A factory that takes a
  ``config`` keyword gets the model config a fresh encoder is made for (the data's form may depend on the
  method: dense features for sigma-space diffusion, categories for a categorical ``process``);
* a **network factory** ``network(config: dict) -> nn.Module`` — ``net(x_in, c_noise, **cond)``; the core
  wraps it in the adapter named by ``config["parameterisation"]`` to get ``D(x, sigma, **cond)``;
* a **default config** (network, training and sampling sections, see :func:`polydiff.model.default_config`);
* **datasets** (name -> loader returning raw items), **recipes** (name -> config overrides + dataset),
  **pretrained** checkpoints (name -> path of a bundled ``.safetensors`` file; the first is the modality's
  default model) and **model_info** (pretrained name -> one line on what it is and what it was trained on,
  shown by ``polydiff models``);
* **guidance**: the null value of each condition key that classifier-free guidance may drop
  (``{"label": -1}``);
* **configure** ``configure(config, fitted_encoder) -> config``: fills data-dependent settings (number of
  columns or classes, vocabulary size) into the config before the network is built for training; the
  completed config is what the bundle stores, so loading never needs the training data;
* **data_recipe**: the name of the recipe whose ``config`` ``polydiff train MODALITY --data PATH`` starts from
  when neither ``--recipe`` nor ``--init`` is given (None: the modality's ``default_config`` alone); its
  ``data`` entry is not read, the user's data is;
* **score** ``score(data, out, *, model, train, method, contamination, steps, batch_size, seed, device,
  save_model, plot, progress, echo, **score_options) -> summary``: the modality's own anomaly detector behind
  ``polydiff score``: fit one on ``train`` (or on ``data`` itself) or load the saved detector ``model`` (a
  bundle whose ``kind`` is ``"detector"``), write one score per item of ``data`` to ``out`` in input order,
  return a summary dict (``rows``, ``flagged``, ``threshold``, ``out``, ``method``, ``min``, ``max``,
  ``mean``, ``model``). ``polydiff score`` without ``--model`` uses the modality that has one. With
  ``--engine ray`` (or ``--resume``) it also passes ``engine``, ``address``, ``workers`` and ``resume``; a
  ``score`` without those parameters cannot run on Ray, and says so through Python's own TypeError;
* **score_options**: extra ``polydiff score`` options (click options) passed to ``score`` by name;
* **sample_options** / **make_cond**: extra ``polydiff sample`` options and how they become ``cond``
  (``make_cond`` returns the dict, or ``(dict, polydiff.sampling.Known)`` when an option asks for masked
  conditioning: known values, their mask and resampling passes, kept out of ``cond``; a ``make_cond`` that
  takes ``generator`` draws its random choices from the run's generator, and one that takes ``draw`` gets
  the 0-based index of a best-of-k draw);
  **output_options**: the names of those options that are decoding or writing choices instead (a decode
  mode, whether invalid items keep their line): they reach :meth:`Encoder.decode` and :meth:`Encoder.write`
  as keyword arguments, never ``cond``;
* **augment** ``augment(x0, cond, config, generator) -> cond``: conditions computed from each clean
  training batch (a super-resolution network's low-resolution input), drawn with the step's generator;
* **demo**: ``demo(out_dir, echo, device)`` — what ``polydiff demo`` shows for this modality; **demo_order**:
  where its act comes in the demo (lower first, then by name);
* **draw**: ``draw(encoder, frames, cond, path, titles)`` — a picture of a list of batches (trajectories);
* **constrain** ``constrain(encoder, cond, process) -> rule``: the categorical modality's rule on which tokens
  may stand together, used when sampling with the sampler argument ``constrain`` true
  (``--sampler-args '{"constrain": true}'``, or stored in a bundle): ``rule(prev, new, last, keep) -> tokens``
  gets each step's tokens before and after the draw and returns them with what breaks the rule put back
  to the mask (absorbing data, ``last`` false) or to an allowed category (see
  :func:`polydiff.discrete.apply_rule`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch

__all__ = ["Modality", "Encoder", "class_index", "labels_for", "label_option", "write_label_table"]


@runtime_checkable
class Encoder(Protocol):
    """Files <-> tensors for one modality. Items are whatever a user holds (points, SMILES, waveforms)."""

    def read(self, path) -> Sequence[Any]:
        """Read items from a file or folder; bad input raises ValueError with one line naming the problem."""

    def write(self, items: Sequence[Any], path, **options) -> List[Path]:
        """Write items to ``path`` (a file or a folder, as the modality defines) atomically; return the files.
        ``options``: the modality's ``output_options`` the user gave (ignore the ones that are not yours)."""

    def fit(self, items: Sequence[Any]) -> "Encoder":
        """Learn whatever the encoding needs from training items (scaling, vocabulary, sizes); return self."""

    def encode(self, items: Sequence[Any]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Items -> (x, cond): a float tensor batch and a dict of condition tensors (mask, labels, ...)."""

    def decode(self, x: torch.Tensor, cond: Dict[str, torch.Tensor], **options) -> List[Any]:
        """Tensors -> items; the inverse of :meth:`encode` up to quantisation. ``options``: the modality's
        ``output_options`` the user gave (ignore the ones that are not yours)."""

    def sample_shape(self) -> Tuple[int, ...]:
        """The shape of one item's tensor, without the batch dimension, for generation."""

    def metadata(self) -> dict:
        """JSON-serialisable state that :meth:`Modality.encoder` turns back into this encoder."""


@dataclass
class Modality:
    """A kind of data the core can diffuse. Plugins pass one to ``register`` in ``register_modalities``."""

    name: str
    description: str
    encoder: Callable[[Optional[dict]], Encoder]
    network: Callable[[dict], torch.nn.Module]
    default_config: dict = field(default_factory=dict)
    datasets: Dict[str, Callable[[], Any]] = field(default_factory=dict)
    recipes: Dict[str, dict] = field(default_factory=dict)
    pretrained: Dict[str, Any] = field(default_factory=dict)
    model_info: Dict[str, str] = field(default_factory=dict)
    guidance: Dict[str, Any] = field(default_factory=dict)
    sample_options: List[Any] = field(default_factory=list)
    make_cond: Optional[Callable[..., Dict[str, torch.Tensor]]] = None
    output_options: List[str] = field(default_factory=list)
    configure: Optional[Callable[[dict, Encoder], dict]] = None
    data_recipe: Optional[str] = None
    score: Optional[Callable[..., dict]] = None
    score_options: List[Any] = field(default_factory=list)
    augment: Optional[Callable[..., Dict[str, torch.Tensor]]] = None
    demo: Optional[Callable[..., Any]] = None
    demo_order: int = 100
    draw: Optional[Callable[..., Any]] = None
    rank: Optional[Callable[..., Optional[torch.Tensor]]] = None
    constrain: Optional[Callable[..., Callable]] = None
    plugin: str = ""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"modality name must be lower-case letters, digits and '_', got {self.name!r}")
        if self.data_recipe is not None and self.data_recipe not in self.recipes:
            raise ValueError(f"modality {self.name!r}: data_recipe {self.data_recipe!r} is not one of its recipes")

    def cond_for_sampling(self, encoder: Encoder, n: int, **options):
        """What ``make_cond`` returns for generating n items with the given plugin sample options: the
        ``cond`` dict, or ``(cond, Known)`` with masked conditioning."""
        if self.make_cond is None:
            return {}
        for key in ("generator", "draw"):  # passed only to a make_cond that takes them
            if key in options and not _accepts(self.make_cond, key):
                options = {k: v for k, v in options.items() if k != key}
        return self.make_cond(encoder, n, **options)


def fresh_encoder(modality: "Modality", config: Optional[dict] = None):
    """A fresh (unfitted) encoder of ``modality`` for a model of ``config`` (given where the factory takes it)."""
    if config is not None and _accepts(modality.encoder, "config"):
        return modality.encoder(None, config=config)
    return modality.encoder(None)


def _accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def class_index(classes: Sequence[str], label) -> int:
    """A class name or index -> index into ``classes`` (-1 for None or "none": no label, the null condition
    of classifier-free guidance); an unknown label is a one-line :class:`polydiff.errors.InputError`."""
    from .errors import InputError

    if label is None or str(label).lower() == "none":
        return -1
    s = str(label)
    if s in classes:
        return list(classes).index(s)
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(classes):
        return int(s)
    raise InputError(f"label {label!r} is not one of this model's classes "
                     f"({', '.join(classes) or 'none: an unconditional model'})")


def labels_for(classes: Sequence[str], n: int, label=None) -> Optional[torch.Tensor]:
    """The class label of each of ``n`` samples, the one meaning of a sampling ``label`` for every labelled
    modality: ``None`` or ``"all"``: sample i gets class i mod k (every class in turn); a class name or index:
    that class for every sample; ``"none"``: -1 for every sample (the null label: the unconditional model of
    classifier-free guidance). A model without classes gets ``None`` (no label condition), and a label other
    than ``None`` / ``"all"`` / ``"none"`` for it is a one-line :class:`polydiff.errors.InputError`."""
    from .errors import InputError

    if not classes:
        if label is not None and str(label).lower() not in ("all", "none"):
            raise InputError(f"label {label!r}: this model was trained without labels")
        return None
    if label is None or str(label).lower() == "all":
        return torch.arange(n) % len(classes)
    return torch.full((n,), class_index(classes, label), dtype=torch.long)


def label_option(examples: str = ""):
    """The ``--label`` option of ``polydiff sample`` for a labelled modality, with the meaning
    :func:`labels_for` gives it (``examples``: a few words on the bundled models' classes)."""
    import click

    names = f" ({examples})" if examples else ""
    return click.Option(["--label"], default=None,
                        help=f"Class to generate: a name or index{names}; 'all' to cycle through the classes, "
                             f"sample i getting class i mod k [default]; or 'none' for the unconditional model.")


def split_output_options(modality: "Modality", options: dict) -> Tuple[dict, dict]:
    """(conditioning options for ``make_cond``, decode/write options) of one set of sample options."""
    out = {k: v for k, v in options.items() if k in modality.output_options}
    return {k: v for k, v in options.items() if k not in out}, out


def write_label_table(folder, files: Sequence, labels, classes: Sequence[str]) -> Optional[Path]:
    """``folder/labels.csv``: the class name of every written sample (``file,label``), so that a folder of
    generated files says which class each one was drawn for; ``none`` for the null label. Written only for
    labelled samples (``labels`` not None); returns its path or None."""
    import csv
    import io

    from .checkpoint import atomic_write_text

    if labels is None:
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "label"])
    for f, lab in zip(files, list(labels)):
        lab = int(lab) if lab is not None else -1
        w.writerow([Path(f).name, classes[lab] if 0 <= lab < len(classes) else ("none" if lab < 0 else lab)])
    return atomic_write_text(Path(folder) / "labels.csv", buf.getvalue())
