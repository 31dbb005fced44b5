"""Generation in fixed chunks: the same samples, bit for bit on a CPU, in one process, on Ray or under
torchrun, for any number of workers.

``n`` samples are cut into chunks of ``chunk`` samples (the last one shorter). Chunk ``c`` holds samples
``c * chunk`` .. and is drawn by one sampling run of exactly that size, seeded with :func:`chunk_seed` of
(seed, c), with ``threads`` CPU threads: its bytes depend on nothing else, so sample ``i`` depends only on
(seed, i // chunk, i % chunk) and the job's settings. Workers take whole chunks; each finished chunk
(the encoded tensors and their conditions, as safetensors) is a numbered part of a
:class:`polydiff.engines.Stage`; when all are there the parts are joined in order, decoded once and
written by the modality's encoder, as ``polydiff sample`` writes.

Engines: ``local`` (this process: ``workers`` chunks at once in threads, one per CPU by default), ``ray``
(a Ray Data actor pool; the model's bundle travels through the object store, so workers need only polydiff
and its plugins installed) and ``torchrun`` (each of the launched processes takes the chunks ``c`` with
``c % world_size == rank``; rank 0 assembles).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import PolydiffError

__all__ = ["chunk_seed", "sample_chunk", "generate", "CHUNK"]

#: samples per chunk unless the job says otherwise
CHUNK = 128


def chunk_seed(seed: int, c: int) -> int:
    """The seed of chunk ``c`` of a job seeded ``seed`` (NumPy's SeedSequence of the pair: independent
    streams for different chunks and seeds)."""
    return int(np.random.SeedSequence([int(seed), int(c)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_chunk(model, c: int, *, n: int, chunk: int, seed: int, threads: Optional[int], sample_kw: dict,
                 options: dict):
    """(x, cond) of chunk ``c`` on the CPU: ``min(chunk, n - c * chunk)`` samples from one run of
    :meth:`polydiff.model.Model.sample` seeded :func:`chunk_seed` (seed, c), with ``threads`` threads (None:
    as the process is set, for callers that set it once around several chunks drawn at once)."""
    m = min(chunk, n - c * chunk)
    with _torch_threads(threads):
        x, cond = model.sample(m, seed=chunk_seed(seed, c), **sample_kw, **options)
    return x.cpu(), {k: v.cpu() for k, v in cond.items() if isinstance(v, torch.Tensor)}


@contextlib.contextmanager
def _torch_threads(threads: Optional[int]):
    """torch's intra-op threads set to ``threads`` inside the block (None: left as they are)."""
    if threads is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _local_workers(workers: Optional[int], todo: int) -> int:
    """Chunks drawn at once by the local engine: ``workers`` threads, or one per CPU this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(workers or cpus, todo))


def chunk_bytes(x: torch.Tensor, cond: dict) -> bytes:
    from safetensors.torch import save

    return save({"x": x.contiguous(), **{f"cond.{k}": v.contiguous() for k, v in cond.items()}})


def read_chunk(data: bytes):
    from safetensors.torch import load

    t = load(data)
    return t["x"], {k[5:]: v for k, v in t.items() if k.startswith("cond.")}


def _model_from_bytes(bundle, modality: str):
    from .engines import bundle_file
    from .model import Model

    with bundle_file(bundle) as path:
        return Model.load(path, modality=modality, device="cpu")


class _SampleChunks:
    """Ray Data callable class: one model per actor; each call draws whole chunks."""

    def __init__(self, bundle, modality: str, job: dict):
        self.model = _model_from_bytes(bundle, modality)
        self.job = job

    def __call__(self, batch: dict) -> dict:
        j = self.job
        payload = [chunk_bytes(*sample_chunk(self.model, int(c), n=j["n"], chunk=j["chunk"], seed=j["seed"],
                                             threads=j["threads"], sample_kw=j["sample"], options=j["options"]))
                   for c in batch["index"]]
        return {"index": np.asarray(batch["index"]), "payload": np.array(payload, dtype=object)}


def _rank_world():
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        raise PolydiffError("--engine torchrun runs under torchrun: torchrun --nproc-per-node N -m polydiff.cli "
                            "sample ...") from None


@contextlib.contextmanager
def _process_group(engine: str):
    """torch.distributed (gloo) for the job's duration under torchrun, else None."""
    if engine != "torchrun":
        yield None
        return
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def _open_stage(dist, rank: int, out, manifest: dict, resume: bool):
    """The job's staging folder: rank 0 makes or checks it and tells the others whether that failed (so
    every rank stops with the same one line); they then open it."""
    from .engines import Stage

    if dist is None:
        return Stage(out, manifest, resume=resume, suffix=".safetensors")
    status, stage = [None], None
    if rank == 0:
        try:
            stage = Stage(out, manifest, resume=resume, suffix=".safetensors")
        except PolydiffError as e:
            status = [str(e)]
    dist.broadcast_object_list(status, src=0)
    if status[0] is not None:
        raise PolydiffError(status[0])
    return stage or Stage(out, manifest, resume=True, suffix=".safetensors")


def generate(model_name: str, modality, n: int, out, *, seed: int = 0, engine: str = "local",
             workers: Optional[int] = None, address: Optional[str] = None, resume: bool = False,
             chunk: int = CHUNK, threads: int = 1, sample_kw: Optional[dict] = None,
             options: Optional[dict] = None, output: Optional[dict] = None, progress: bool = True) -> dict:
    """Draw ``n`` samples of ``model_name`` (a pretrained name or bundle path of ``modality``) in chunks on
    ``engine`` and write them to ``out`` as ``polydiff sample`` does. ``sample_kw``: sampler, steps,
    schedule, guidance and precision (as :meth:`Model.sample` takes them); ``options``: the modality's
    conditioning options; ``output``: its decode/write options. Returns the summary (rank 0 under torchrun;
    the other ranks return None)."""
    import hashlib

    from tqdm.auto import tqdm

    from .engines import check_engine_options, cluster_cpus, iter_rows_one_line, ray_session
    from .model import Model, resolve_model_path

    # --workers is the Ray actors, or with the local engine the chunks this process draws at once
    check_engine_options(engine, address, None if engine == "local" else workers, allowed=("local", "ray", "torchrun"))
    if workers is not None and workers < 1:
        raise PolydiffError(f"--workers must be at least 1, got {workers}")
    if engine == "torchrun" and (address is not None or workers is not None):
        raise PolydiffError("under torchrun the launcher sets the workers (--nproc-per-node, --nnodes)")
    if chunk < 1:
        raise PolydiffError(f"--chunk must be at least 1, got {chunk}")
    if threads < 1:
        raise PolydiffError(f"--threads must be at least 1, got {threads}")
    sample_kw, options, output = dict(sample_kw or {}), dict(options or {}), dict(output or {})
    path, _ = resolve_model_path(model_name, modality.name)
    model = Model.load(path, modality=modality.name, device="cpu")
    bundle = Path(model.path).read_bytes()
    count = -(-n // chunk)
    job = {"n": n, "chunk": chunk, "seed": seed, "threads": threads, "sample": sample_kw, "options": options}
    manifest = {"job": "sample", "modality": modality.name, "model": hashlib.sha256(bundle).hexdigest(),
                **job, "output": output}
    rank, world = _rank_world() if engine == "torchrun" else (0, 1)
    size = lambda c: min(chunk, n - c * chunk)  # noqa: E731
    with _process_group(engine) as dist:
        stage = _open_stage(dist, rank, out, manifest, resume)
        if rank == 0:
            from .checkpoint import atomic_write_text

            atomic_write_text(stage.folder / "model.json",
                              json.dumps({"model": str(model.path), "modality": modality.name}))
        mine = [c for c in range(count) if c % world == rank]
        todo = [c for c in mine if not stage.done(c)]
        bar = tqdm(total=sum(map(size, mine)), initial=sum(map(size, mine)) - sum(map(size, todo)), unit="samples",
                   desc=f"sampling {modality.name} ({engine})", leave=False, disable=not progress or None)
        try:
            if engine == "ray" and todo:
                with ray_session(address, workers) as ray:
                    cpus = cluster_cpus(ray)
                    w = min(workers or cpus, len(todo))
                    ds = ray.data.from_items([{"index": c} for c in todo], override_num_blocks=len(todo))
                    ds = ds.map_batches(_SampleChunks, batch_size=1, concurrency=w, num_cpus=min(1.0, cpus / w),
                                        fn_constructor_args=([ray.put(bundle)], modality.name, job),
                                        batch_format="numpy")
                    for row in iter_rows_one_line(ds, "sampling"):
                        c = int(row["index"])
                        stage.write(c, row["payload"])
                        bar.update(size(c))
            elif engine == "local" and (local_w := _local_workers(workers, len(todo))) > 1:
                # chunks drawn at once in threads of this process (torch computes outside the GIL); each
                # chunk's samples depend on its seed alone, so the bytes are those of one chunk after another
                from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

                draw = lambda c: chunk_bytes(*sample_chunk(model, c, n=n, chunk=chunk, seed=seed,  # noqa: E731
                                                           threads=None, sample_kw=sample_kw, options=options))
                with _torch_threads(threads), ThreadPoolExecutor(local_w) as pool:
                    pending = {pool.submit(draw, c): c for c in todo}
                    try:
                        while pending:
                            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                            failed = None
                            for f in done:
                                c = pending.pop(f)
                                if f.exception() is not None:
                                    failed = failed or f.exception()
                                    continue
                                stage.write(c, f.result())
                                bar.update(size(c))
                            if failed is not None:
                                raise failed
                    finally:  # stopped: chunks not begun are dropped, the ones being drawn are kept (--resume)
                        for f in pending:
                            f.cancel()
                        for f, c in pending.items():
                            if not f.cancelled() and f.exception() is None:
                                stage.write(c, f.result())
            else:
                for c in todo:
                    stage.write(c, chunk_bytes(*sample_chunk(model, c, n=n, chunk=chunk, seed=seed, threads=threads,
                                                             sample_kw=sample_kw, options=options)))
                    bar.update(size(c))
        finally:
            bar.close()
        if dist is not None:
            dist.barrier()
        if rank != 0:
            return None
        try:
            summary = assemble(stage, count, model, out, output)
        except PolydiffError as e:  # e.g. an output the encoder cannot write: the drawn samples stay
            raise PolydiffError(f"{e} (the {n} samples drawn are kept: polydiff merge {stage.folder} --out PATH "
                                f"writes them)") from None
    summary.update({"modality": modality.name, "model": str(model_name), "n": n, "seed": seed, "engine": engine,
                    "chunks": count, "chunk": chunk, "threads": threads,
                    "workers": {"ray": workers, "local": _local_workers(workers, count)}.get(engine, world)})
    return summary


def assemble(stage, count: int, model, out, output: dict, keep: bool = False) -> dict:
    """Join the parts in order, decode them once and write ``out`` with the modality's encoder; the
    staging folder goes when the output is written (unless ``keep``)."""
    import shutil

    missing = [c for c in range(count) if not stage.part(c).exists()]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise PolydiffError(f"{stage.folder}: {len(missing)} of {count} chunks are not drawn yet ({shown}); finish "
                            f"the job with the same command and --resume")
    xs, conds = [], []
    for c in range(count):
        x, cond = read_chunk(stage.part(c).read_bytes())
        xs.append(x)
        conds.append(cond)
    x = torch.cat(xs)
    cond = {k: torch.cat([cd[k] for cd in conds]) for k in conds[0]}
    items = model.encoder.decode(x, cond, **output)
    files = model.encoder.write(items, out, **output)
    if not keep:
        shutil.rmtree(stage.folder)
    invalid = sum(1 for it in items if it is None) if isinstance(items, (list, tuple)) else 0
    return {"invalid": invalid, "files": [str(f) for f in files], "out": str(out)}


def merge(folder, out) -> dict:
    """``polydiff merge``: write the samples of a sampling job's parts folder (``OUT.partial``) to ``out``,
    in chunk order, as the job would have; the folder is kept. Every chunk must be drawn."""
    import hashlib

    from .engines import Stage
    from .model import Model

    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        source = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        raise PolydiffError(f"{folder}: not the parts folder of a sampling job (no readable manifest.json and "
                            f"model.json)") from None
    if manifest.get("job") != "sample":
        raise PolydiffError(f"{folder}: the parts of a {manifest.get('job')} job, not of a sampling job")
    path = Path(source["model"])
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != manifest["model"]:
        raise PolydiffError(f"{folder}: the model that drew these samples ({path}) is gone or has changed")
    model = Model.load(path, modality=manifest["modality"], device="cpu")
    stage = Stage.existing(folder, ".safetensors")
    count = -(-int(manifest["n"]) // int(manifest["chunk"]))
    summary = assemble(stage, count, model, out, manifest.get("output") or {}, keep=True)
    summary.update({"modality": manifest["modality"], "n": manifest["n"], "seed": manifest["seed"], "chunks": count})
    return summary
