"""Checkpoints: one safetensors file per bundle, JSON in its header, written atomically, never unpickled.

A bundle is a single ``.safetensors`` file. Tensors are stored under prefixes (``model.``, ``ema.``,
``optim.``, ``rng.``); everything else (modality, network config, encoder metadata, training step, ...)
is one JSON document stored in the safetensors header under the key ``"polydiff"``. One file means one
atomic rename: a reader never sees a half-written bundle, and a crash mid-save leaves the previous
bundle intact. Any safetensors reader can open it; ``polydiff inspect`` prints the JSON.

Loading refuses pickle-based formats (``.pt``, ``.pth``, ``.pkl``, ``.ckpt``, ``.bin``, or any file whose
bytes are not a safetensors header) without ever handing the bytes to an unpickler.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .errors import PolydiffError

__all__ = ["save_bundle", "load_bundle", "read_meta", "atomic_write_bytes", "atomic_write_text", "atomic_writer", "give_final_mode",
           "BundleError", "FORMAT", "split_prefix", "PICKLE_SUFFIXES"]

FORMAT = "polydiff-bundle"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib"}
_MAX_HEADER = 100 * 1024 * 1024


class BundleError(PolydiffError):
    """A file is not a readable polydiff bundle."""


def _tmp_head(path: Path) -> str:
    """Start of the temporary names used for ``path`` on this machine: ``.<name>.<host>.``."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    return f".{path.name}.{host}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or cannot tell: leave its files alone
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of ``path`` whose writer (a process on this machine) no longer exists.

    A writer killed mid-save (SIGKILL, power loss) cannot remove its temporary file; the next successful
    save of the same target does. Files of live writers are kept.
    """
    head = _tmp_head(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def give_final_mode(tmp, path) -> None:
    """Give the temporary file ``tmp`` the permissions that writing ``path`` in place would have left: the
    existing file's mode when ``path`` exists, else 0o666 less the umask (``mkstemp`` creates files 0o600)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb"):
    """Open a temporary file beside ``path`` for writing (``mode`` "wb" or "w"); on a clean exit it is
    flushed, fsynced and renamed onto ``path``, on an exception it is removed and ``path`` is untouched.

    The temporary file is named ``.<name>.<host>.<pid>.<random>.tmp``; after the rename, temporary files
    of the same target left by dead writers on this machine are removed. Use it to stream large outputs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_head(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        give_final_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _remove_stale_temps(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_bundle(path, tensors: Dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` as one safetensors bundle."""
    from safetensors.torch import save

    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    doc = dict(meta)
    doc.setdefault("format", FORMAT)
    doc.setdefault("format_version", FORMAT_VERSION)
    data = save(clean, metadata={"polydiff": json.dumps(doc, sort_keys=True)})
    return atomic_write_bytes(path, data)


def _check_file(path: Path) -> bytes:
    if not path.exists():
        raise BundleError(f"{path}: no such file")
    if path.is_dir():
        raise BundleError(f"{path}: is a folder, not a polydiff bundle (.safetensors file)")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BundleError(f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); "
                          "polydiff reads only .safetensors bundles, because unpickling can run arbitrary code")
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if n <= min(_MAX_HEADER, size - 8) and head[8:9] == b"{":
            return head  # a well-formed safetensors header; its first bytes are a length, not a magic number
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise BundleError(f"{path}: looks like a pickle/torch.save file; refusing to load it "
                          "(polydiff reads only .safetensors bundles)")
    if len(head) < 9:
        raise BundleError(f"{path}: not a polydiff bundle (file too short to be safetensors)")
    raise BundleError(f"{path}: not a polydiff bundle (no safetensors header)")


def read_meta(path) -> dict:
    """The JSON document of a bundle, without reading its tensors."""
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BundleError(f"{path}: not a polydiff bundle (corrupt safetensors header)") from None
    raw = (header.get("__metadata__") or {}).get("polydiff")
    if raw is None:
        raise BundleError(f"{path}: a safetensors file, but not a polydiff bundle (no 'polydiff' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise BundleError(f"{path}: not a polydiff bundle (corrupt 'polydiff' metadata)") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path}: not a polydiff bundle (format {meta.get('format')!r})")
    return meta


def tensor_shapes(path) -> Dict[str, list]:
    """Name -> shape of every tensor in a bundle, from its header (no tensor is read)."""
    path = Path(path)
    read_meta(path)  # the same checks and one-line errors
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: list(v.get("shape", [])) for k, v in header.items() if k != "__metadata__"}


def load_bundle(path, device="cpu") -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a bundle: (tensors, meta). Never unpickles; refuses anything that is not a polydiff bundle."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise BundleError(f"{path}: corrupt polydiff bundle ({e})") from None
    return tensors, meta


def split_prefix(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The sub-dictionary of keys starting with ``prefix + '.'``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def export_bundle(src, out, *, half: bool = True, sample: Optional[dict] = None,
                  clear: Tuple[str, ...] = ()) -> Tuple[Path, dict]:
    """Write the EMA weights of the bundle ``src`` (a run's ``model.safetensors`` or a run folder) to ``out``
    as an inference bundle: only ``ema.*`` tensors, floating-point ones in float16 when ``half`` (loading
    casts them back to the network's float32), the same JSON with ``kind="model"``, and the sampling
    defaults in ``sample`` (sampler, steps, cfg_scale, cfg_interval, ...; None values are left as they are)
    merged into its config, less the sampling keys named in ``clear``. Returns (path, meta)."""
    src = Path(src)
    if src.is_dir():
        src = src / "model.safetensors"
    tensors, meta = load_bundle(src)
    ema = {k: (v.half() if half and v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("ema.")}
    if not ema:
        raise BundleError(f"{src}: holds no ema.* weights to export")
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
    meta["kind"] = "model"
    return save_bundle(out, ema, with_sample_defaults(meta, sample, clear)), meta


def with_sample_defaults(meta: dict, sample: Optional[dict] = None, clear: Tuple[str, ...] = ()) -> dict:
    """``meta`` with the sampling defaults in ``sample`` (None values left as they are) merged into its
    config, less the sampling keys named in ``clear`` (changed in place and returned)."""
    if sample or clear:
        config = dict(meta.get("config") or {})
        merged = {**(config.get("sample") or {}), **{k: v for k, v in (sample or {}).items() if v is not None}}
        config["sample"] = {k: v for k, v in merged.items() if k not in clear}
        meta["config"] = config
    return meta


def restamp_bundle(src, out, *, sample: Optional[dict] = None, clear: Tuple[str, ...] = ()) -> Tuple[Path, dict]:
    """Write the bundle ``src`` to ``out`` unchanged but for its sampling defaults (see
    :func:`with_sample_defaults`). Returns (path, meta)."""
    tensors, meta = load_bundle(src)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
    return save_bundle(out, tensors, with_sample_defaults(meta, sample, clear)), meta


# ---------------------------------------------------------------------------------------------------------
# training state: weights that fit a network, optimizer and random-generator states as tensors + JSON
# ---------------------------------------------------------------------------------------------------------
def _jsonable(obj):
    """A deep copy of ``obj`` as JSON would return it (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj))


def weight_mismatch(expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor],
                    allow_missing: bool = False) -> Optional[str]:
    """Why the weights ``given`` do not fit a network whose state dict is ``expected``, in one line (the
    first few missing, unexpected and differently shaped keys), or None when they fit. ``allow_missing``:
    keys of the network that ``given`` lacks are fine (layers a fine-tuning run adds)."""
    missing = [] if allow_missing else sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if not (missing or extra or shapes):
        return None
    return "; ".join(s for s in (
        f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
        f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "",
        f"shape differs for {', '.join(f'{k} {list(given[k].shape)} vs {list(expected[k].shape)}' for k in shapes[:5])}"
        if shapes else "") if s)


def optimizer_state(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], dict]:
    """An optimizer's state as bundle tensors (``optim.state.<param index>.<name>``) and JSON (groups and
    scalar state)."""
    osd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in osd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.state.{i}.{name}"] = val
            else:
                scalars[f"{i}.{name}"] = val
    groups = [{k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in grp.items()}
              for grp in osd["param_groups"]]
    return tensors, {"param_groups": _jsonable(groups), "scalars": _jsonable(scalars)}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], meta: dict) -> None:
    """The inverse of :func:`optimizer_state` (``meta``: its JSON part); ValueError or KeyError when the
    state does not fit ``opt``."""
    import copy

    state: dict = {}
    for key, val in split_prefix(tensors, "optim.state").items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = val
    for key, val in (meta.get("scalars") or {}).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = val
    groups = copy.deepcopy(meta.get("param_groups") or [])
    for grp in groups:
        if isinstance(grp.get("betas"), list):
            grp["betas"] = tuple(grp["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> Tuple[Dict[str, torch.Tensor], dict]:
    """This process's random generators (torch, CUDA, Python, NumPy) as bundle tensors and JSON."""
    import random

    import numpy as np

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype("int64"))
    meta = {"python": _jsonable(random.getstate()),
            "numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    return tensors, meta


def restore_rng_state(tensors: Dict[str, torch.Tensor], meta: dict) -> None:
    """The inverse of :func:`rng_state`; generators a bundle does not hold are left alone."""
    import random

    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8).cpu())
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([st.to(torch.uint8).cpu() for st in cuda])
    py = meta.get("python")
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    npm = meta.get("numpy")
    if npm and "rng.numpy" in tensors:
        import numpy as np

        keys = tensors["rng.numpy"].numpy().astype(np.uint32)
        np.random.set_state((npm["name"], keys, npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
