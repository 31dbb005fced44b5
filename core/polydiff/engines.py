"""Work beyond one process, on engines that already exist: Ray (scoring, generation) and torchrun (training,
generation). polydiff adds what makes their results independent of the worker count and safe to interrupt:

* **Fixed pieces.** Work is cut into pieces that depend only on the input (row ranges of a table, ranges
  of sample indices), never on how many workers run them, and each piece is computed the same way
  wherever it runs; so the output is the same bytes for 1, 2 or 100 workers.
* **Staged, numbered parts.** Each finished piece is written atomically as ``part-NNNNNN`` into a staging
  folder ``OUT.partial`` beside the output, with a manifest naming the job. A run that stops leaves only
  whole parts; ``--resume`` skips them. When every part is there the output is assembled (a file: the parts
  joined in order; a folder: the staging folder renamed) and the staging folder removed, so ``OUT`` is
  only ever complete.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

from .checkpoint import atomic_write_bytes, atomic_write_text, atomic_writer
from .errors import PolydiffError

__all__ = ["ENGINES", "require_ray", "ray_session", "Stage", "check_engine_options", "iter_rows_one_line",
           "bundle_file"]

ENGINES = ("local", "ray", "torchrun")

#: what ``pip install`` needs for ``--engine ray``
RAY_EXTRA = "polydiff[ray]"


def require_ray():
    """Import Ray (with Ray Data) or raise the one-line error saying what to install."""
    from .errors import MissingDependency

    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependency(f"--engine ray needs Ray Data, which is not installed: pip install '{RAY_EXTRA}'") \
            from None
    return ray


def check_engine_options(engine: str, address: Optional[str], workers: Optional[int], allowed=("local", "ray")):
    """One-line errors for engine options that do not fit together (before anything is read or loaded)."""
    if engine not in allowed:
        raise PolydiffError(f"--engine must be one of {', '.join(allowed)}, got {engine!r}")
    if workers is not None and workers < 1:
        raise PolydiffError(f"--workers must be at least 1, got {workers}")
    if engine == "local" and (address is not None or workers is not None):
        flag = "--address" if address is not None else "--workers"
        raise PolydiffError(f"{flag} applies to --engine ray")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT address must accept a connection: Ray itself waits on an unreachable one indefinitely,
    printing a warning every few seconds."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return  # found through this machine's running instance, or Ray Client's own protocol
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        raise PolydiffError(f"no Ray cluster answers at {address}; start one with `ray start --head` or check "
                            f"the address (HOST:PORT, or auto for the one on this machine)") from None


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, workers: Optional[int] = None):
    """Ray, connected: the running instance when this process already joined one, else the cluster at
    ``address`` ("auto": the one started on this machine with ``ray start``), else a new local instance
    with ``workers`` CPUs, shut down on exit. Ray Data keeps the input order and its own progress bars off
    (polydiff draws one bar for the whole job)."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
        if address:
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise PolydiffError(f"could not start or reach {where}: {str(e).splitlines()[0]}") from None
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def iter_rows_one_line(ds, what: str):
    """``ds.iter_rows()``, with a failure inside Ray (a worker that cannot start, an error in Ray itself)
    turned into one line naming its cause; polydiff's own errors pass through."""
    it = iter(ds.iter_rows())
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except PolydiffError:
            raise
        except Exception as e:  # Ray wraps the cause; its message's last line names it
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise PolydiffError(f"{what} on Ray failed: {lines[-1] if lines else type(e).__name__}") from None
        yield row


@contextlib.contextmanager
def bundle_file(bundle):
    """A temporary file holding a bundle's bytes, for the loaders that read paths. ``bundle``: the bytes, or
    ``[ref]`` to them in Ray's object store (the driver holds the reference for the whole job, so an actor
    that Ray restarts finds them too). Removed on exit."""
    import tempfile

    if isinstance(bundle, list):
        import ray

        bundle = ray.get(bundle[0])
    fd, tmp = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bundle)
        yield tmp
    finally:
        os.unlink(tmp)


def cluster_cpus(ray) -> int:
    """CPUs of the Ray cluster this process is connected to."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class Stage:
    """The staging folder ``OUT.partial`` of a job writing ``OUT`` in numbered parts.

    ``manifest``: what identifies the job (inputs, options, model); a resumed run must match it exactly.
    ``resume``: keep the parts an interrupted run left (else such a folder is an error, not silently reused
    or deleted: it may hold hours of work). ``empty_out``: ``OUT`` will be this folder renamed, so an
    existing non-empty ``OUT`` is an error.
    """

    def __init__(self, out, manifest: dict, *, resume: bool = False, suffix: str = "", empty_out: bool = False):
        self.out = Path(out)
        if not self.out.name:
            raise PolydiffError(f"{out}: not a name for an output")
        self.folder = self.out.with_name(self.out.name + ".partial")
        self.suffix = suffix
        self.manifest = json.loads(json.dumps(manifest, sort_keys=True))
        if empty_out and self.out.is_dir() and any(self.out.iterdir()):
            raise PolydiffError(f"{self.out}: the output folder exists and is not empty; remove it or choose another")
        mf = self.folder / "manifest.json"
        if self.folder.exists():
            if not resume:
                raise PolydiffError(f"{self.folder}: an interrupted run left its parts here; add --resume to finish "
                                    f"it, or remove the folder to start again")
            try:
                old = json.loads(mf.read_text())
            except (OSError, ValueError):
                raise PolydiffError(f"{self.folder}: no readable manifest.json; remove the folder to start again") \
                    from None
            if old != self.manifest:
                diff = sorted(k for k in set(old) | set(self.manifest) if old.get(k) != self.manifest.get(k))
                raise PolydiffError(f"{self.folder}: the parts there belong to another job (it differs in "
                                    f"{', '.join(diff)}); remove the folder to start again")
        else:
            self.folder.mkdir(parents=True)
            atomic_write_text(mf, json.dumps(self.manifest, sort_keys=True, indent=1) + "\n")

    @classmethod
    def existing(cls, folder, suffix: str = "") -> "Stage":
        """The staging folder ``folder`` as it is (for reading a job's parts; nothing is checked or made)."""
        stage = cls.__new__(cls)
        stage.folder, stage.suffix = Path(folder), suffix
        stage.out = stage.folder.with_name(stage.folder.name[:-len(".partial")] if stage.folder.name.endswith(
            ".partial") else stage.folder.name)
        stage.manifest = json.loads((stage.folder / "manifest.json").read_text())
        return stage

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}{self.suffix}"

    def done(self, index: int) -> bool:
        return self.part(index).exists()

    def write(self, index: int, data: bytes) -> Path:
        return atomic_write_bytes(self.part(index), data)

    def missing(self, indices: Iterable[int]) -> list:
        return [i for i in indices if not self.done(i)]

    def join(self, count: int, head: bytes = b"") -> Path:
        """Assemble the file ``OUT``: ``head``, then parts 0 .. count-1 in order; written atomically, then the
        staging folder is removed."""
        with atomic_writer(self.out, "wb") as f:
            f.write(head)
            for i in range(count):
                with open(self.part(i), "rb") as p:
                    shutil.copyfileobj(p, f, 1 << 20)
        shutil.rmtree(self.folder)
        return self.out

    def rename(self) -> Path:
        """Make the staging folder the output folder ``OUT`` (its manifest kept as ``manifest.json``)."""
        if self.out.is_dir():
            self.out.rmdir()  # empty (checked at the start)
        os.replace(self.folder, self.out)
        return self.out

