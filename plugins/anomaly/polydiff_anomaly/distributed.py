"""Scoring tables on Ray: ``polydiff score DATA --engine ray`` and :func:`score_dataset`.

The table (a CSV or Parquet file, or a folder of them) is cut into **pieces** that depend on the files
only: a Parquet row group, or a run of ``chunk_rows`` CSV records found by one scan for the record ends
(quotes respected). Ray Data runs the pieces on an actor pool (``map_batches`` with a callable class: the
detector is loaded once per actor, from the object store, so workers need no shared copy of it); each
actor reads its piece with the same reader and error messages as local scoring (file and line of the bad
rows), scores it and returns the rendered rows. Ray retries a piece whose worker died, and keeps the input
order. The driver writes each finished piece as a numbered part into ``OUT.partial`` (see
:class:`polydiff.engines.Stage`) and assembles ``OUT`` at the end, so an interrupted run resumes from its
finished pieces.

Scores are the same bytes as local scoring for any number of workers: a row's score does not depend on the
rows scored with it or on the thread count (dte-np's distances run in fixed-size blocks; the network
methods score fixed blocks of rows with fixed noise), and each piece renders its rows exactly as
:meth:`DiffusionDetector.score_file` does.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from polydiff.errors import InputError, PolydiffError

from .table import Select, Table, _from_frame, _pandas, table_files

__all__ = ["score_on_ray", "score_dataset", "plan_pieces", "read_piece"]

#: rows per CSV piece (Parquet pieces are row groups)
CHUNK_ROWS = 100_000
_SCAN_BLOCK = 1 << 24


# ------------------------------------------------------------------------------------------ planning
def _csv_pieces(path: Path, chunk_rows: int) -> List[dict]:
    """Byte ranges of ``chunk_rows`` records each (after the header line) of the CSV file ``path``; a record
    ends at a newline outside double quotes."""
    size = path.stat().st_size
    cuts, header_end, records, parity, pos, last = [], None, 0, 0, 0, -1
    with open(path, "rb") as f:
        while True:
            block = f.read(_SCAN_BLOCK)
            if not block:
                break
            buf = np.frombuffer(block, np.uint8)
            nl = np.flatnonzero(buf == 10)
            q = np.flatnonzero(buf == 34)
            if len(q):
                inside = (parity + np.searchsorted(q, nl)) % 2 == 1
                nl = nl[~inside]
                parity = (parity + len(q)) % 2
            ends = nl + pos
            if len(ends):
                last = int(ends[-1])
            if header_end is None and len(ends):
                header_end, ends = int(ends[0]) + 1, ends[1:]
            if header_end is not None and len(ends):
                # record number (1-based, after the header) of each end; cut after every chunk_rows-th
                k = records + np.arange(1, len(ends) + 1)
                cuts.extend(int(e) + 1 for e in ends[k % chunk_rows == 0])
                records += len(ends)
            pos += len(block)
    if header_end is None:  # one line: a header (or nothing) and no rows
        raise InputError(f"{path}: has a header but no rows")
    if last < size - 1:  # a last record without a final newline
        records += 1
    if records == 0 or size <= header_end:
        raise InputError(f"{path}: has a header but no rows")
    bounds = [header_end] + [c for c in cuts if c < size] + [size]
    pieces, line = [], 2
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        n = min(chunk_rows, records - (line - 2))
        pieces.append({"kind": "csv", "file": str(path), "header": header_end, "lo": lo, "hi": hi, "line": line,
                       "rows": n})
        line += n
    return pieces


def _parquet_pieces(path: Path) -> List[dict]:
    from polydiff.deps import require

    pq = require("pyarrow.parquet", "reading Parquet files", pip="pyarrow")
    try:
        md = pq.ParquetFile(path).metadata
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    pieces, start = [], 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if n:
            pieces.append({"kind": "parquet", "file": str(path), "group": g, "start": start, "rows": n})
        start += n
    if not pieces:
        raise InputError(f"{path}: has a header but no rows")
    return pieces


def plan_pieces(data, chunk_rows: int = CHUNK_ROWS) -> List[dict]:
    """The pieces of the table ``data`` (a CSV/Parquet file or a folder of them), in row order."""
    return _pieces(table_files(data), chunk_rows)


def _pieces(files, chunk_rows: int) -> List[dict]:
    out = []
    for f in files:
        out.extend(_parquet_pieces(f) if f.suffix.lower() in (".parquet", ".pq") else _csv_pieces(f, chunk_rows))
    return out


def read_piece(piece: dict, select: Optional[Select] = None, chunk_rows: int = CHUNK_ROWS):
    """The tables of one piece, in order (a Parquet row group is read ``chunk_rows`` rows at a time)."""
    path = Path(piece["file"])
    if piece["kind"] == "parquet":
        import pyarrow.parquet as pq

        start = piece["start"]
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, row_groups=[piece["group"]]):
            if batch.num_rows:
                yield _from_frame(batch.to_pandas(), str(path), start, select)
                start += batch.num_rows
        return
    pd = _pandas()
    with open(path, "rb") as f:
        head = f.read(piece["header"])
        f.seek(piece["lo"])
        body = f.read(piece["hi"] - piece["lo"])
    if not body.strip():
        return
    try:
        df = pd.read_csv(io.BytesIO(head + body), sep="\t" if path.suffix.lower() == ".tsv" else ",",
                         skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    if len(df):
        yield _from_frame(df, str(path), piece["line"], select)


# ------------------------------------------------------------------------------------------ rendering
def output_kind(out) -> str:
    """``csv`` or ``parquet`` for an output file, ``folder`` for an output folder (an existing folder, or a
    path written with a trailing slash)."""
    p = Path(out)
    if p.is_dir() or str(out).endswith(("/", os.sep)):
        return "folder"
    if p.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    return "csv"


def csv_header(ids: Optional[List[str]], flag: bool) -> bytes:
    import csv

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(ids or []) + (["score", "is_anomaly"] if flag else ["score"]))
    return buf.getvalue().encode()


def csv_rows(table: Table, scores: np.ndarray, threshold: float, flag: bool) -> bytes:
    """The CSV lines of scored rows: identifier columns, ``score`` (8 significant digits), ``is_anomaly``."""
    import csv

    buf = io.StringIO()
    cols = [[f"{v:.8g}" for v in scores]]
    if flag:
        cols.append([str(int(v > threshold)) for v in scores])
    if table.ids is not None:
        cols = [table.ids[c].astype(str).tolist() for c in table.ids.columns] + cols
    csv.writer(buf, lineterminator="\n").writerows(zip(*cols))
    return buf.getvalue().encode()


def arrow_rows(table: Table, scores: np.ndarray, threshold: float, flag: bool):
    """Scored rows as an Arrow table: identifier columns (their own types), ``score``, ``is_anomaly``."""
    import pyarrow as pa

    cols, names = [], []
    if table.ids is not None:
        for c in table.ids.columns:
            cols.append(pa.array(table.ids[c]))
            names.append(str(c))
    cols.append(pa.array(np.asarray(scores, np.float64)))
    names.append("score")
    if flag:
        cols.append(pa.array((np.asarray(scores) > threshold).astype(np.int8)))
        names.append("is_anomaly")
    return pa.Table.from_arrays(cols, names=names)


class ParquetSink:
    """Scored rows into one Parquet file in row groups of exactly ``group_rows`` rows (the last one shorter),
    whatever the sizes of the tables written: the file's bytes do not depend on how the work was cut."""

    def __init__(self, f, group_rows: int = 100_000):
        self.f, self.group_rows, self.writer, self.buf, self.n = f, group_rows, None, [], 0

    def write(self, t) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.f, t.schema)
        self.buf.append(t)
        self.n += t.num_rows
        while self.n >= self.group_rows:
            whole = pa.concat_tables(self.buf)
            self.writer.write_table(whole.slice(0, self.group_rows), row_group_size=self.group_rows)
            rest = whole.slice(self.group_rows)
            self.buf, self.n = [rest], rest.num_rows

    def close(self) -> None:
        import pyarrow as pa

        if self.n and self.writer is not None:
            self.writer.write_table(pa.concat_tables(self.buf), row_group_size=self.group_rows)
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------ the actors
def _load_detector(bundle):
    from polydiff.engines import bundle_file

    from .detector import DiffusionDetector

    with bundle_file(bundle) as path:
        return DiffusionDetector.load(path)


class _ScorePieces:
    """Ray Data callable class: scores whole pieces; one detector per actor."""

    def __init__(self, bundle: bytes, select: Optional[dict], kind: str, flag: bool, chunk_rows: int):
        self.det = _load_detector(bundle)
        self.select = Select(**{k: tuple(v) for k, v in select.items()}) if select else None
        self.kind, self.flag, self.chunk_rows = kind, flag, chunk_rows

    def __call__(self, batch: dict) -> dict:
        out = {k: [] for k in ("index", "payload", "rows", "flagged", "min", "max", "sum", "error", "ids")}
        for index, spec in zip(batch["index"], batch["piece"]):
            rows, flagged, lo, hi, total, parts, error, ids = 0, 0, np.inf, -np.inf, 0.0, [], "", ""
            try:
                for table in read_piece(json.loads(spec), self.select, self.chunk_rows):
                    s = self.det.decision_function(table)
                    parts.append(arrow_rows(table, s, self.det.threshold_, self.flag) if self.kind == "parquet"
                                 else csv_rows(table, s, self.det.threshold_, self.flag))
                    rows += len(s)
                    flagged += int((s > self.det.threshold_).sum())
                    lo, hi, total = min(lo, float(s.min())), max(hi, float(s.max())), total + float(s.sum())
                    ids = json.dumps([] if table.ids is None else [str(c) for c in table.ids.columns])
            except PolydiffError as e:
                error = str(e)
            if self.kind == "parquet" and parts:
                import pyarrow as pa

                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, parts[0].schema) as w:
                    for t in parts:
                        w.write_table(t)
                payload = sink.getvalue().to_pybytes()
            else:
                payload = b"".join(parts)
            for k, v in (("index", int(index)), ("payload", payload), ("rows", rows), ("flagged", flagged),
                         ("min", lo), ("max", hi), ("sum", total), ("error", error), ("ids", ids)):
                out[k].append(v)
        return {k: np.array(v, dtype=object) if k in ("payload", "error", "ids") else np.asarray(v)
                for k, v in out.items()}


# ------------------------------------------------------------------------------------------ the driver
def _fingerprint(files) -> list:
    return [[str(f), st.st_size, st.st_mtime_ns] for f, st in ((f, f.stat()) for f in files)]


def score_on_ray(data, out, det_factory, *, identity: dict, select: Optional[Select] = None, flag: bool = True,
                 address: Optional[str] = None, workers: Optional[int] = None, resume: bool = False,
                 progress: bool = True, chunk_rows: int = CHUNK_ROWS, want_scores: bool = False):
    """Score ``data`` into ``out`` on Ray (see the module's docstring). ``det_factory()`` returns the fitted
    detector (called once; on a resumed run the detector saved in the staging folder is used instead);
    ``identity`` names it in the manifest. Returns ``(summary, detector, scores or None)``."""
    from tqdm.auto import tqdm

    from polydiff.checkpoint import atomic_write_text
    from polydiff.engines import Stage, cluster_cpus, iter_rows_one_line, ray_session, require_ray

    from .detector import DiffusionDetector

    require_ray()
    kind = output_kind(out)
    files = table_files(data)
    pieces = _pieces(files, chunk_rows)
    suffix = {"csv": ".csv", "parquet": ".arrows", "folder": ".csv"}[kind]
    sel = None if select is None else {"use": list(select.use), "exclude": list(select.exclude),
                                       "ids": list(select.ids)}
    manifest = {"job": "score", "data": _fingerprint(files), "pieces": len(pieces), "chunk_rows": chunk_rows,
                "output": kind, "select": sel, "flag": flag, "detector": identity}
    stage = Stage(out, manifest, resume=resume, suffix=suffix, empty_out=kind == "folder")
    saved = stage.folder / "detector.safetensors"
    try:
        if saved.exists():
            det = DiffusionDetector.load(saved)
        else:
            det = det_factory()
            det.save(saved)
        bundle = saved.read_bytes()
        todo = stage.missing(range(len(pieces)))
        stats_of = lambda i: stage.folder / f"stats-{i:06d}.json"  # noqa: E731
        total_rows = sum(p["rows"] for p in pieces)
        done_rows = total_rows - sum(pieces[i]["rows"] for i in todo)
        bar = tqdm(total=total_rows, initial=done_rows, unit="rows", desc="scoring on ray", leave=False,
                   disable=not progress or None)
        try:
            if todo:
                with ray_session(address, workers) as ray:
                    cpus = cluster_cpus(ray)
                    n = min(workers or cpus, len(todo))
                    ref = ray.put(bundle)
                    ds = ray.data.from_items([{"index": i, "piece": json.dumps(pieces[i])} for i in todo],
                                             override_num_blocks=len(todo))
                    ds = ds.map_batches(_ScorePieces, batch_size=1, concurrency=n, num_cpus=min(1.0, cpus / n),
                                        fn_constructor_args=([ref], sel, kind, flag, chunk_rows), batch_format="numpy")
                    for row in iter_rows_one_line(ds, "scoring"):
                        if row["error"]:
                            raise InputError(row["error"])
                        i = int(row["index"])
                        st = {k: (float(row[k]) if k in ("min", "max", "sum") else int(row[k]))
                              for k in ("rows", "flagged", "min", "max", "sum")}
                        st["ids"] = json.loads(row["ids"]) if row["ids"] else None
                        atomic_write_text(stats_of(i), json.dumps(st))
                        stage.write(i, row["payload"])  # after its stats: a part that exists is complete
                        bar.update(st["rows"])
        finally:
            bar.close()
        stats = [json.loads(stats_of(i).read_text()) for i in range(len(pieces))]
        ids = next((s["ids"] for s in stats if s["ids"] is not None), None)
        scores = _read_scores(stage, pieces, kind, len(ids or [])) if want_scores else None
        _assemble(stage, kind, len(pieces), ids, flag)
    except BaseException as e:
        import shutil

        # bad input must change, so its parts cannot be resumed; a run that finished no piece has none
        if isinstance(e, InputError) or not any(stage.folder.glob("part-*")):
            shutil.rmtree(stage.folder, ignore_errors=True)
        raise
    rows = sum(s["rows"] for s in stats)
    summary = {"rows": rows, "flagged": sum(s["flagged"] for s in stats) if flag else None,
               "threshold": det.threshold_, "out": str(out), "engine": "ray", "pieces": len(pieces),
               "min": min(s["min"] for s in stats if s["rows"]), "max": max(s["max"] for s in stats if s["rows"]),
               "mean": sum(s["sum"] for s in stats) / max(rows, 1)}
    return summary, det, scores


def _read_scores(stage, pieces, kind, n_ids) -> np.ndarray:
    """Every score, in order, read back from the parts (for the histogram)."""
    import csv

    out = []
    for i in range(len(pieces)):
        data = stage.part(i).read_bytes()
        if kind == "parquet":
            import pyarrow as pa

            if data:
                out.append(pa.ipc.open_stream(data).read_all().column("score").to_numpy())
        else:
            rows = list(csv.reader(io.StringIO(data.decode())))
            out.append(np.array([float(r[n_ids]) for r in rows], np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def _assemble(stage, kind: str, count: int, ids, flag: bool) -> None:
    head = csv_header(ids, flag)
    if kind == "csv":
        stage.join(count, head=head)
        return
    if kind == "folder":
        for i in range(count):  # each part a CSV file of its own, with the header
            p = stage.part(i)
            from polydiff.checkpoint import atomic_write_bytes

            atomic_write_bytes(p, head + p.read_bytes())
            (stage.folder / f"stats-{i:06d}.json").unlink()
        (stage.folder / "detector.safetensors").unlink()
        stage.rename()
        return
    import shutil

    import pyarrow as pa

    from polydiff.checkpoint import atomic_writer

    with atomic_writer(stage.out, "wb") as f:
        sink = ParquetSink(f)
        for i in range(count):
            data = stage.part(i).read_bytes()
            if data:
                sink.write(pa.ipc.open_stream(data).read_all())
        sink.close()
    shutil.rmtree(stage.folder)


def detector_identity(model) -> dict:
    """What names a saved detector in a job's manifest: its file's hash."""
    h = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    return {"model": h}


# ------------------------------------------------------------------------------------------ Python form
class _ScoreFrames:
    def __init__(self, bundle: bytes, features: Optional[List[str]], flag: bool):
        self.det = _load_detector(bundle)
        self.features = features or [str(c) for c in self.det.feature_names_in_]
        self.flag = flag

    def __call__(self, df):
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise InputError(f"Ray Dataset: no column {missing[0]!r} (the detector was fitted on "
                             f"{', '.join(self.features[:8])}{' ...' if len(self.features) > 8 else ''})")
        s = self.det.decision_function(df[self.features])
        df = df.copy()
        df["score"] = s
        if self.flag:
            df["is_anomaly"] = (s > self.det.threshold_).astype(np.int8)
        return df


def score_dataset(ds, detector, *, features: Optional[List[str]] = None, flag: bool = True,
                  concurrency: Optional[int] = None, batch_size: Optional[int] = 65536):
    """A Ray Dataset with ``score`` (and ``is_anomaly``) added to every row of ``ds``, scored by
    ``detector`` (a saved detector's path, or a fitted :class:`DiffusionDetector`) on an actor pool of
    ``concurrency`` actors (the cluster's CPUs when not given), the detector loaded once per actor.

    ``features``: the columns to score (default: the ones the detector was fitted on); other columns pass
    through. Lazy, like every Ray Dataset: write it (``.write_parquet``) or iterate it to run it. A row's
    score does not depend on the batching, so the same rows give the same scores on any cluster."""
    from polydiff.engines import cluster_cpus, require_ray

    from .detector import DiffusionDetector

    ray = require_ray()
    if isinstance(detector, DiffusionDetector):
        with tempfile.TemporaryDirectory() as tmp:
            bundle = detector.save(Path(tmp) / "d.safetensors").read_bytes()
    else:
        DiffusionDetector.load(detector)  # a bad path or bundle fails here, with its one-line error
        bundle = Path(detector).read_bytes()
    n = concurrency or cluster_cpus(ray)
    return ds.map_batches(_ScoreFrames, batch_format="pandas", batch_size=batch_size, concurrency=n, num_cpus=1,
                          fn_constructor_args=([ray.put(bundle)], list(features) if features else None, flag))
