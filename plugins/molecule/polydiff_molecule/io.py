"""Molecule files <-> RDKit molecules.

Readers (:func:`read_molecules`) accept

* ``.smi`` / ``.smi.gz``: one SMILES per line, optionally followed by whitespace and a name (stored as the
  molecule's ``_Name``); blank lines and a first line whose first word is ``smiles`` are skipped;
* ``.csv`` / ``.csv.gz``: a header row with a column named ``smiles`` (any case); other columns are ignored;
* ``.sdf`` / ``.sdf.gz``: MDL SD files (hydrogens removed, molecules sanitized).

A record that RDKit cannot turn into a molecule with at least one atom is *unparsable*: with ``strict=True``
the first one raises :class:`polydiff.errors.InputError` naming the file and the line (SMILES, CSV) or record
(SDF); otherwise it is skipped and counted. Writers (:func:`write_smiles`, :func:`write_sdf`) go through a
temporary file in the target folder and an atomic rename (:func:`polydiff.checkpoint.atomic_write_bytes`).

RDKit's messages (parse errors, valence errors, ...) are sent to the Python logger
``polydiff.molecule.rdkit`` once :func:`quiet_rdkit` has run; every function here calls it on first use.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from pathlib import Path
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence

from polydiff.checkpoint import atomic_write_bytes
from polydiff.errors import InputError, MissingDependency

__all__ = ["ReadResult", "read_molecules", "write_smiles", "write_sdf", "quiet_rdkit", "to_mol",
           "READ_SUFFIXES", "WRITE_SUFFIXES", "LOGGER_NAME", "file_kind"]

LOGGER_NAME = "polydiff.molecule.rdkit"
READ_SUFFIXES = (".smi", ".smi.gz", ".csv", ".csv.gz", ".sdf", ".sdf.gz")
WRITE_SUFFIXES = (".smi", ".smi.gz", ".sdf", ".sdf.gz")

_log = logging.getLogger(LOGGER_NAME)
# A library logger with a NullHandler: messages reach the handlers an application configured (root or
# "polydiff"), and Python's last-resort handler never prints them to stderr when none was configured.
logging.getLogger("polydiff.molecule").addHandler(logging.NullHandler())

_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")
_quiet_done = False
_last_message: List[str] = []  # the messages RDKit logged since the last _clear_last()


class ReadResult(NamedTuple):
    """What :func:`read_molecules` returns: the parsed molecules and the number of unparsable records."""

    mols: list
    invalid: int


def _rdkit():
    """Import RDKit, or raise :class:`MissingDependency` with the pip command."""
    try:
        import rdkit  # noqa: F401
        from rdkit import Chem
    except ImportError:
        raise MissingDependency("the molecule modality needs RDKit: pip install rdkit") from None
    return Chem


class _ForwardToPython(logging.Handler):
    """Re-emits records of RDKit's ``rdkit`` logger on ``polydiff.molecule.rdkit``, without the timestamp."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _STAMP.sub("", record.getMessage()).strip()
        except Exception:  # a malformed record must never break parsing
            return
        if not text:
            return
        _last_message.append(text)
        del _last_message[:-8]
        _log.log(record.levelno, "%s", text)


def quiet_rdkit() -> None:
    """Send RDKit's C++ log messages to the Python logger ``polydiff.molecule.rdkit`` (idempotent).

    RDKit normally writes them to stderr (its ``rdkit`` Python logger has its own stderr handler). This
    routes the C++ logs through Python logging (``rdBase.LogToPythonLogger``), removes RDKit's stderr handler
    and forwards the records to ``polydiff.molecule.rdkit``, whose messages are shown only where the
    application configured logging. It changes RDKit's logging for the whole process.
    """
    global _quiet_done
    if _quiet_done:
        return
    _rdkit()
    import rdkit
    from rdkit import rdBase

    rdBase.LogToPythonLogger()
    rd_logger = logging.getLogger("rdkit")
    default = getattr(rdkit, "log_handler", None)
    if default is not None and default in rd_logger.handlers:
        rd_logger.removeHandler(default)
    if not any(isinstance(h, _ForwardToPython) for h in rd_logger.handlers):
        rd_logger.addHandler(_ForwardToPython())
    rd_logger.propagate = False
    _quiet_done = True


def _clear_last() -> None:
    _last_message.clear()


def _reason(default: str) -> str:
    """The first RDKit message since :func:`_clear_last`, on one line, or ``default``."""
    if not _last_message:
        return default
    return " ".join(_last_message[0].split())


def file_kind(path) -> Optional[str]:
    """``"smi"``, ``"csv"`` or ``"sdf"`` from a file name (``.gz`` allowed), or None if unsupported."""
    name = Path(path).name.lower()
    for kind in ("smi", "csv", "sdf"):
        if name.endswith(f".{kind}") or name.endswith(f".{kind}.gz"):
            return kind
    return None


def _read_text(path: Path) -> str:
    """The whole file as text (gunzipped for ``.gz``); raises one-line InputErrors."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a {', '.join(READ_SUFFIXES)} file")
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read ({' '.join(str(e).split())})") from None
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise InputError(f"{path}: empty file")
    return text


def _from_smiles(smiles: str, Chem):
    """A sanitized molecule with at least one atom, or None."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def read_molecules(path, strict: bool = False) -> ReadResult:
    """Read molecules from a ``.smi``, ``.csv`` or ``.sdf`` file (each optionally gzipped).

    Returns ``ReadResult(mols, invalid)``: the RDKit molecules in file order and the number of records
    that could not be parsed (skipped). With ``strict=True`` the first unparsable record raises
    :class:`InputError` naming the file and line (or SDF record). A missing, empty or unsupported file
    raises :class:`InputError` too. An empty SMILES cell in a CSV counts as unparsable.
    """
    Chem = _rdkit()
    quiet_rdkit()
    path = Path(path)
    kind = file_kind(path)
    if kind is None:
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a {', '.join(READ_SUFFIXES)} file")
        raise InputError(f"{path}: unsupported file type; molecules are read from {', '.join(READ_SUFFIXES)}")
    text = _read_text(path)
    if kind == "sdf":
        return _read_sdf(path, text, strict, Chem)
    mols, invalid = [], 0
    for line_no, smiles, name in (_smi_records(text) if kind == "smi" else _csv_records(path, text)):
        _clear_last()
        mol = _from_smiles(smiles, Chem) if smiles else None
        if mol is None:
            if strict:
                why = _reason("empty SMILES" if not smiles else "cannot parse SMILES")
                raise InputError(f"{path}: line {line_no}: invalid SMILES {smiles!r} ({why})")
            invalid += 1
            continue
        if name:
            mol.SetProp("_Name", name)
        mols.append(mol)
    return ReadResult(mols, invalid)


def _smi_records(text: str):
    """(line number, SMILES, name) for each non-blank line of a SMILES file, header skipped."""
    first = True
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.strip().split(None, 1)
        if not parts:
            continue
        if first and parts[0].lower() == "smiles":
            first = False
            continue
        first = False
        yield line_no, parts[0], (parts[1].strip() if len(parts) > 1 else "")


def _csv_records(path: Path, text: str):
    """(line number, SMILES, "") for each non-blank row of a CSV file with a ``smiles`` column."""
    reader = csv.reader(io.StringIO(text))
    header = None
    for row in reader:
        if any(c.strip() for c in row):
            header = [c.strip() for c in row]
            break
    if header is None:
        raise InputError(f"{path}: empty file")
    lower = [h.lower() for h in header]
    if "smiles" not in lower:
        shown = ", ".join(repr(h) for h in header[:20]) + (", ..." if len(header) > 20 else "")
        raise InputError(f"{path}: no 'smiles' column (columns found: {shown})")
    col = lower.index("smiles")
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        yield reader.line_num, (row[col].strip() if col < len(row) else ""), ""


def _read_sdf(path: Path, text: str, strict: bool, Chem) -> ReadResult:
    """SD records in file order; a record is unparsable when RDKit returns None or a molecule without atoms."""
    supplier = Chem.ForwardSDMolSupplier(io.BytesIO(text.encode("utf-8")), sanitize=True, removeHs=True)
    mols, invalid, record = [], 0, 0
    while True:
        _clear_last()
        try:
            mol = next(supplier)
        except StopIteration:
            break
        record += 1
        if mol is None or mol.GetNumAtoms() == 0:
            if strict:
                why = _reason("cannot parse the record")
                raise InputError(f"{path}: SDF record {record}: invalid molecule ({why})")
            invalid += 1
            continue
        mols.append(mol)
    if record == 0:
        raise InputError(f"{path}: no SDF records found")
    return ReadResult(mols, invalid)


# ---------------------------------------------------------------------------------------------- writing
def to_mol(item: Any):
    """An RDKit molecule with at least one atom from a Mol or a SMILES string; None for anything unusable."""
    Chem = _rdkit()
    quiet_rdkit()
    if item is None:
        return None
    if isinstance(item, str):
        return _from_smiles(item.strip(), Chem) if item.strip() else None
    if isinstance(item, Chem.Mol):
        return item if item.GetNumAtoms() > 0 else None
    raise InputError(f"expected an RDKit Mol, a SMILES string or None, got {type(item).__name__}")


def _canonical(item: Any) -> Optional[str]:
    """Canonical SMILES of a Mol / SMILES string, or None when it is missing or RDKit rejects it."""
    Chem = _rdkit()
    mol = to_mol(item)
    if mol is None:
        return None
    try:
        smiles = Chem.MolToSmiles(mol)
    except Exception:  # RDKit raises its own exception types for unsanitizable molecules
        return None
    return smiles or None


def _write(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def write_smiles(mols_or_smiles: Iterable[Any], path, keep_invalid: bool = False) -> Path:
    """Write one canonical SMILES per line to ``path`` (``.gz`` compresses), atomically; return the path.

    Items are RDKit molecules, SMILES strings (canonicalised) or None. Invalid items (None, an unparsable
    string, a molecule RDKit cannot write) are dropped, or, with ``keep_invalid=True``, written as empty
    lines so that line i of the file is item i.
    """
    quiet_rdkit()
    path = Path(path)
    lines = []
    for item in mols_or_smiles:
        smiles = _canonical(item)
        if smiles is None:
            if keep_invalid:
                lines.append("")
            continue
        lines.append(smiles)
    return _write(path, "".join(line + "\n" for line in lines))


def write_sdf(mols: Sequence[Any], path) -> Path:
    """Write molecules (Mol or SMILES; None and unusable items skipped) as an SD file, atomically.

    A molecule without a ``_Name`` is named ``sample_<i>`` after its position in ``mols``, so records
    stay traceable to samples when invalid ones were skipped. ``.gz`` compresses.
    """
    Chem = _rdkit()
    quiet_rdkit()
    path = Path(path)
    buf = io.StringIO()
    writer = Chem.SDWriter(buf)
    for i, item in enumerate(mols):
        mol = to_mol(item)
        if mol is None:
            continue
        mol = Chem.Mol(mol)
        if not mol.HasProp("_Name") or not mol.GetProp("_Name"):
            mol.SetProp("_Name", f"sample_{i}")
        try:
            block = Chem.MolToMolBlock(mol)  # raises for molecules RDKit cannot write (then skipped)
        except Exception:
            continue
        if block:
            writer.write(mol)
    writer.close()
    return _write(path, buf.getvalue())
