"""Tables in, numbers out: reading numeric tables from arrays, DataFrames, CSV, Parquet, .npy and .npz,
with one-line errors that name the file, the column and the first bad rows.

Row numbers in messages are the ones a person sees: for CSV the line in the file (the header is line
1), for other formats the 0-based row index.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from polydiff.errors import InputError

__all__ = ["Table", "Select", "read_table", "iter_table", "check_finite", "align_columns", "SUFFIXES",
           "table_files"]

SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".npy", ".npz")
#: the formats read in chunks (and the ones a folder of tables may hold)
STREAMED = (".csv", ".tsv", ".txt", ".parquet", ".pq")


@dataclass
class Table:
    """A numeric table: values [n, d] (float64) and one name per column."""

    values: np.ndarray
    columns: List[str]
    source: str = "data"
    row_offset: int = 0  # added to a 0-based row index to give the number shown in messages
    row_numbers: Optional[np.ndarray] = None  # or, for a sample of a file, the number shown for each row
    ids: Optional[object] = None  # the identifier columns a Select carried along (a DataFrame), not features

    def shown(self, rows: Sequence[int]) -> np.ndarray:
        """The numbers that messages show for these 0-based rows (file line numbers for a CSV file)."""
        rows = np.asarray(rows, np.int64)
        return self.row_numbers[rows] if self.row_numbers is not None else rows + self.row_offset

    def __len__(self):
        return len(self.values)


def _rows_text(rows: Sequence[int], offset, csv: bool) -> str:
    """``offset``: added to each 0-based row, or a Table (whose own numbering is used)."""
    first = np.asarray(rows[:5], np.int64)
    shown = ", ".join(str(int(r)) for r in (offset.shown(first) if isinstance(offset, Table) else first + offset))
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{'lines' if csv else 'rows'} {shown}{more}"


def _is_csv(source: str) -> bool:
    return source.lower().endswith((".csv", ".tsv", ".txt"))


def _pandas():
    from polydiff.deps import require

    return require("pandas", "reading tables")


@dataclass(frozen=True)
class Select:
    """Which columns of a named table are features: ``use`` (only these), or every column but ``exclude``;
    ``ids`` are identifier columns (names, keys, text) carried unchanged into the output and never features."""

    use: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    ids: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, use: Optional[str] = None, exclude: Optional[str] = None, ids: Optional[str] = None):
        """From comma-separated lists (``None`` when nothing is selected)."""
        split = lambda text: tuple(c.strip() for c in (text or "").split(",") if c.strip())  # noqa: E731
        sel = cls(split(use), split(exclude), split(ids))
        if sel.use and sel.exclude:
            raise InputError("give the feature columns either as a list to use or as a list to exclude, not both")
        both = set(sel.use) & set(sel.ids)
        if both:
            raise InputError(f"column {sorted(both)[0]!r} cannot be both an identifier and a feature")
        return sel if (sel.use or sel.exclude or sel.ids) else None

    def apply(self, df, source: str):
        """(feature frame, identifier frame or None) of a DataFrame; an unknown name is a one-line error."""
        columns = [str(c) for c in df.columns]
        missing = [c for c in self.use + self.exclude + self.ids if c not in columns]
        if missing:
            shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
            raise InputError(f"{source}: no column {missing[0]!r} (columns: {shown})")
        ids = df[list(self.ids)].reset_index(drop=True) if self.ids else None
        drop = set(self.exclude) | set(self.ids)
        keep = list(self.use) if self.use else [c for c in df.columns if str(c) not in drop]
        if not keep:
            raise InputError(f"{source}: no feature columns left after the selection")
        return df[keep], ids


def _from_frame(df, source: str, row_offset: int, select: Optional[Select] = None) -> Table:
    pd = _pandas()
    if df.shape[1] == 0:
        raise InputError(f"{source}: no columns")
    if df.shape[0] == 0:
        raise InputError(f"{source}: has a header but no rows")
    columns = [str(c) for c in df.columns]
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise InputError(f"{source}: duplicate column names {', '.join(dup)}")
    ids = None
    if select is not None:
        df, ids = select.apply(df, source)
        columns = [str(c) for c in df.columns]
    out = np.empty(df.shape, dtype=np.float64)
    for j, c in enumerate(df.columns):
        col = df[c]
        if pd.api.types.is_bool_dtype(col.dtype):
            out[:, j] = col.to_numpy(dtype=np.float64)
            continue
        if not pd.api.types.is_numeric_dtype(col.dtype):
            num = pd.to_numeric(col, errors="coerce")
            bad = np.nonzero(num.isna().to_numpy() & col.notna().to_numpy())[0]
            if len(bad):
                sample = str(col.iloc[bad[0]])[:30]
                raise InputError(f"{source}: column {columns[j]!r} has text ({sample!r}) on "
                                 f"{_rows_text(bad, row_offset, _is_csv(source))}; every column must be numeric")
            col = num
        out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return Table(out, columns, source, row_offset, ids=ids)


def read_table(data, *, name: Optional[str] = None, select: Optional[Select] = None) -> Table:
    """Read a whole table. ``data``: a path (CSV/TSV, Parquet, .npy, .npz), a DataFrame or an array;
    ``select``: which columns of a named table are features (see :class:`Select`)."""
    pd = None
    if isinstance(data, Table):
        return data
    if isinstance(data, (str, Path)):
        path = Path(data)
        source = str(path)
        if not path.exists():
            raise InputError(f"{source}: no such file")
        if path.is_dir():
            raise InputError(f"{source}: is a folder, not a table")
        suffix = path.suffix.lower()
        if path.stat().st_size == 0:
            raise InputError(f"{source}: empty file")
        if suffix in (".npy", ".npz"):
            if select is not None:
                raise InputError(f"{source}: choosing columns by name needs a table with a header (CSV, Parquet)")
            return _from_array(_load_numpy(path), source)
        if suffix in (".parquet", ".pq"):
            from polydiff.deps import require

            require("pyarrow", "reading Parquet files")
            pd = _pandas()
            try:
                df = pd.read_parquet(path)
            except Exception as e:
                raise InputError(f"{source}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
            return _from_frame(df, source, 0, select)
        if suffix in (".csv", ".tsv", ".txt") or suffix == "":
            pd = _pandas()
            try:
                df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", skipinitialspace=True)
            except pd.errors.EmptyDataError:
                raise InputError(f"{source}: empty file") from None
            except (pd.errors.ParserError, UnicodeDecodeError) as e:
                raise InputError(f"{source}: not a readable CSV file ({str(e).splitlines()[0]})") from None
            return _from_frame(df, source, 2, select)
        raise InputError(f"{source}: unsupported table format {suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        import pandas as pd  # noqa: F811
    except ImportError:
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return _from_frame(data, name or "DataFrame", 0, select)
    if hasattr(data, "toarray") and hasattr(data, "nnz"):  # scipy.sparse: densifying could exhaust memory
        raise InputError(f"{name or 'array'}: sparse input is not supported; pass a dense array (X.toarray())")
    return _from_array(np.asarray(data), name or "array")


def _load_numpy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path}: not a numeric NumPy file ({str(e).splitlines()[0]})") from None
    except Exception as e:
        raise InputError(f"{path}: unreadable NumPy file ({str(e).splitlines()[0]})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        keys = list(arr.keys())
        if not keys:
            raise InputError(f"{path}: the .npz archive holds no arrays")
        key = "X" if "X" in keys else keys[0]
        arr = arr[key]
    return arr


def _from_array(arr: np.ndarray, source: str) -> Table:
    if arr.ndim == 1:
        raise InputError(f"{source}: expected a 2-D table (rows x columns), got a 1-D array of shape {arr.shape}. "
                         "Reshape your data: X.reshape(-1, 1) for one column, X.reshape(1, -1) for one row")
    if arr.ndim != 2:
        raise InputError(f"{source}: expected a 2-D table, got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{source}: no rows")
    if arr.shape[1] == 0:
        raise InputError(f"{source}: no columns: 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if np.iscomplexobj(arr):
        raise InputError(f"{source}: Complex data not supported (values of type {arr.dtype})")
    if arr.dtype == object:  # numbers held as Python objects convert; anything else is refused
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise InputTypeError(f"{source}: expected numbers, got values of type object ({e})") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{source}: expected numbers, got values of type {arr.dtype}")
    return Table(arr.astype(np.float64, copy=False), [f"x{j}" for j in range(arr.shape[1])], source, 0)


class InputTypeError(InputError, TypeError):
    """Values of a type that cannot be read as numbers (a TypeError too, as numpy and scikit-learn raise)."""


def check_finite(table: Table, medians: Optional[np.ndarray] = None) -> np.ndarray:
    """Values with NaN replaced by ``medians`` (when given); any remaining NaN or inf is an error."""
    v = table.values
    if medians is not None:
        nan = np.isnan(v)
        if nan.any():
            v = np.where(nan, medians[None, :], v)
    bad = ~np.isfinite(v)
    if bad.any():
        j = int(np.nonzero(bad.any(0))[0][0])
        rows = np.nonzero(bad[:, j])[0]
        what = "NaN" if np.isnan(v[rows[0], j]) else "infinite values"
        hint = " (use --impute median to fill NaN)" if what == "NaN" and medians is None else ""
        raise InputError(f"{table.source}: column {table.columns[j]!r} has {what} on "
                         f"{_rows_text(rows, table, _is_csv(table.source))}{hint}")
    return v


def align_columns(table: Table, expected: Sequence[str]) -> Table:
    """Reorder ``table``'s columns to ``expected``; a missing or extra column is an error naming it."""
    expected = list(expected)
    if table.columns == expected:
        return table
    generic = all(c == f"x{j}" for j, c in enumerate(table.columns))
    if generic and len(table.columns) == len(expected):
        return Table(table.values, expected, table.source, table.row_offset, table.row_numbers)  # same width
    missing = [c for c in expected if c not in table.columns]
    extra = [c for c in table.columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing[:5]))}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(map(repr, extra[:5]))}{' ...' if len(extra) > 5 else ''}")
        raise InputError(f"{table.source}: columns differ from the training table ({'; '.join(parts)})")
    idx = [table.columns.index(c) for c in expected]
    return Table(table.values[:, idx], expected, table.source, table.row_offset, table.row_numbers)


def table_files(data) -> List[Path]:
    """The files of a table given as a CSV/Parquet file or a folder of them (its CSV and Parquet files in
    name order, hidden files and names starting with ``_`` left out: one table, read file after file)."""
    p = Path(data)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.is_file() and not f.name.startswith((".", "_")) and f.suffix.lower() in STREAMED)
        if not files:
            raise InputError(f"{p}: no CSV or Parquet files in the folder")
        for f in files:
            if f.stat().st_size == 0:
                raise InputError(f"{f}: empty file")
        return files
    if p.suffix.lower() not in STREAMED:
        raise InputError(f"{p}: a table in parts is read from CSV or Parquet files; got {p.suffix or 'no suffix'!r}")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    return [p]


def iter_table(path, chunk_rows: int = 100_000, select: Optional[Select] = None) -> Iterator[Table]:
    """Read a CSV or Parquet file, or a folder of them (see :func:`table_files`), in chunks of
    ``chunk_rows`` rows (bounded memory); other inputs whole."""
    if isinstance(path, (str, Path)) and Path(path).is_dir():
        for f in table_files(path):
            yield from iter_table(f, chunk_rows, select)
        return
    p = Path(path) if isinstance(path, (str, Path)) else None
    if p is None or p.suffix.lower() not in (".csv", ".tsv", ".txt", ".parquet", ".pq"):
        yield read_table(path, select=select)
        return
    source = str(p)
    if not p.exists():
        raise InputError(f"{source}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"{source}: empty file")
    pd = _pandas()
    if p.suffix.lower() in (".parquet", ".pq"):
        from polydiff.deps import require

        pq = require("pyarrow.parquet", "reading Parquet files", pip="pyarrow")
        try:
            f = pq.ParquetFile(p)
        except Exception as e:
            raise InputError(f"{source}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        start, any_rows = 0, False
        for batch in f.iter_batches(batch_size=chunk_rows):
            df = batch.to_pandas()
            if len(df) == 0:
                continue
            any_rows = True
            yield _from_frame(df, source, start, select)
            start += len(df)
        if not any_rows:
            raise InputError(f"{source}: has a header but no rows")
        return
    try:
        reader = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",", chunksize=chunk_rows,
                             skipinitialspace=True)
        line, any_rows = 2, False
        for df in reader:
            if len(df) == 0:
                continue
            any_rows = True
            yield _from_frame(df, source, line, select)
            line += len(df)
    except pd.errors.EmptyDataError:
        raise InputError(f"{source}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    if not any_rows:
        raise InputError(f"{source}: has a header but no rows")


def is_streamable(data) -> bool:
    """True for a CSV or Parquet path, or a folder, which is read in chunks rather than whole."""
    return isinstance(data, (str, Path)) and (Path(data).suffix.lower() in STREAMED or Path(data).is_dir())


def sample_table(path, max_rows: int, seed: int = 0, chunk_rows: int = 100_000,
                 select: Optional[Select] = None) -> Table:
    """A uniform random sample of at most ``max_rows`` rows of a CSV or Parquet file, read in chunks
    (reservoir sampling, Vitter's algorithm R): memory is bounded by ``max_rows`` and ``chunk_rows``, not by
    the file. Rows keep their file order. Returns the whole table when it has at most ``max_rows`` rows."""
    rng = np.random.default_rng(seed)
    res, ids, seen, columns, source = None, None, 0, None, str(path)
    for chunk in iter_table(path, chunk_rows=chunk_rows, select=select):
        v = chunk.values
        if columns is None:
            columns = list(chunk.columns)
            res = np.empty((max_rows, v.shape[1]), dtype=v.dtype)
            ids = np.empty(max_rows, dtype=np.int64)
            shown = np.empty(max_rows, dtype=np.int64)  # each kept row's number in messages (its file line)
        elif list(chunk.columns) != columns:
            raise InputError(f"{source}: the columns change between chunks")
        take = min(max(max_rows - seen, 0), len(v))
        if take:  # fill the reservoir
            res[seen:seen + take] = v[:take]
            ids[seen:seen + take] = np.arange(seen, seen + take)
            shown[seen:seen + take] = chunk.shown(np.arange(take))
        if take < len(v):  # replace with probability max_rows / (index + 1)
            gidx = np.arange(seen + take, seen + len(v))
            r = rng.integers(0, gidx + 1)
            hit = np.flatnonzero(r < max_rows)
            res[r[hit]] = v[take:][hit]  # later rows overwrite earlier ones at the same slot, as in the loop
            ids[r[hit]] = gidx[hit]
            shown[r[hit]] = chunk.shown(take + hit)
        seen += len(v)
    n = min(seen, max_rows)
    order = np.argsort(ids[:n], kind="stable")
    return Table(res[:n][order], columns, source, row_numbers=shown[:n][order])
