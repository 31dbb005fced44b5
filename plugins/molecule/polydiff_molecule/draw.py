"""Pictures of molecules: :func:`grid` (a PNG or SVG grid, ``polydiff evaluate molecule --grid``) and
:func:`draw_frames` (the modality's ``draw`` hook, ``polydiff sample molecule --trajectory``).

Drawing uses RDKit's own renderer (``Draw.MolsToGridImage`` with the Cairo backend returning PNG bytes, or
SVG text for a ``.svg`` path), so no other imaging library is needed; files are written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

from polydiff.checkpoint import atomic_write_bytes
from polydiff.errors import InputError, MissingDependency

__all__ = ["grid", "draw_frames"]


def _drawable(item: Any, Chem):
    """(molecule to draw, default legend): a copy with 2-D coordinates, or an empty molecule for None and for
    anything RDKit cannot draw."""
    from rdkit.Chem import rdDepictor

    mol = None
    if isinstance(item, str):
        mol = Chem.MolFromSmiles(item.strip().split()[0]) if item.strip() else None
    elif isinstance(item, Chem.Mol):
        mol = Chem.Mol(item)
    elif item is not None:
        raise InputError(f"expected an RDKit Mol, a SMILES string or None, got {type(item).__name__}")
    if mol is None or mol.GetNumAtoms() == 0:
        return Chem.Mol(), "invalid"
    try:
        mol.UpdatePropertyCache(strict=False)
        rdDepictor.Compute2DCoords(mol)
        legend = Chem.MolToSmiles(mol)
    except Exception:  # RDKit errors on a broken molecule: drawn as an empty cell
        return Chem.Mol(), "invalid"
    return mol, legend


def grid(mols: Sequence[Any], path, n_cols: int = 8, legends: Optional[Sequence[str]] = None,
         sub_size: int = 200) -> Path:
    """Draw molecules (RDKit Mol, SMILES or None = an empty cell labelled "invalid") in a grid of ``n_cols``
    columns, ``sub_size`` pixels per cell; ``legends`` default to the SMILES. A ``.svg`` path gets SVG, any
    other a PNG. Written atomically; returns the path."""
    from . import io as molio

    Chem = molio._rdkit()
    molio.quiet_rdkit()
    from rdkit.Chem import Draw

    mols = list(mols)
    if not mols:
        raise InputError("no molecules to draw")
    if n_cols < 1:
        raise InputError(f"n_cols must be at least 1, got {n_cols}")
    if legends is not None and len(legends) != len(mols):
        raise InputError(f"{len(legends)} legends for {len(mols)} molecules")
    cells = [_drawable(m, Chem) for m in mols]
    names = [str(x) for x in legends] if legends is not None else [c[1] for c in cells]
    path = Path(path)
    svg = path.suffix.lower() == ".svg"
    kw = dict(molsPerRow=min(n_cols, len(mols)), subImgSize=(sub_size, sub_size), legends=names)
    if svg:
        data = Draw.MolsToGridImage([c[0] for c in cells], useSVG=True, **kw)
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    else:
        from rdkit.Chem.Draw import rdMolDraw2D

        if not hasattr(rdMolDraw2D, "MolDraw2DCairo"):
            raise MissingDependency("this RDKit build cannot draw PNG (no Cairo); write an .svg grid instead")
        data = Draw.MolsToGridImage([c[0] for c in cells], returnPNG=True, **kw)
        if not isinstance(data, (bytes, bytearray)):  # an older RDKit returned a PIL image
            import io

            buf = io.BytesIO()
            data.save(buf, format="PNG")
            data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, bytes(data))


def _rows(cond: dict, batch: int, k: int) -> dict:
    """The first k samples of every per-sample tensor of ``cond`` (other values as they are)."""
    out = {}
    for key, v in (cond or {}).items():
        if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0 and v.shape[0] == batch:
            out[key] = v[:k].detach().cpu()
        elif hasattr(v, "detach"):
            out[key] = v.detach().cpu()
        else:
            out[key] = v
    return out


def draw_frames(encoder, frames: List[Any], cond: dict, path, titles: Optional[List[str]] = None,
                n_cols: int = 6, max_frames: int = 8) -> Path:
    """The modality's ``draw`` hook: one grid row per frame (at most ``max_frames``, evenly spaced, the last
    always kept), showing the first ``n_cols`` samples of that frame decoded in valence mode; the first cell
    of a row is labelled with the frame's title."""
    import numpy as np
    import torch

    from . import io as molio

    Chem = molio._rdkit()
    if not frames:
        raise InputError("no frames to draw")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    shown, legends = [], []
    for i in idx:
        x = torch.as_tensor(frames[i]).detach().cpu()
        x = x.long() if getattr(encoder, "tokens", False) else x.float()  # categories stay integers
        k = min(n_cols, x.shape[0])
        c = _rows(cond, x.shape[0], k)
        mols = encoder.decode(x[:k], c, mode="valence")
        title = titles[i] if titles and i < len(titles) else f"frame {i}"
        for j in range(n_cols):
            m = mols[j] if j < len(mols) else None
            smiles = _drawable(m, Chem)[1] if m is not None else ""
            smiles = smiles if len(smiles) <= 24 else smiles[:21] + "..."
            shown.append(m)
            legends.append(f"{title}: {smiles}" if j == 0 else smiles)
    return grid(shown, path, n_cols=n_cols, legends=legends)
