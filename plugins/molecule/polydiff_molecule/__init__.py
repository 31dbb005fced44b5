"""polydiff-molecule: small organic molecules as padded dense graphs (the chemistry layer).

* :mod:`polydiff_molecule.io` reads ``.smi``, ``.csv``/``.csv.gz`` and ``.sdf``/``.sdf.gz`` files into RDKit
  molecules and writes ``.smi`` / ``.sdf`` files atomically; RDKit's own messages go to the Python logger
  ``polydiff.molecule.rdkit`` instead of raw stderr.
* :mod:`polydiff_molecule.graph` holds :class:`~polydiff_molecule.graph.MoleculeEncoder`, the encoder between
  molecules and one float tensor per batch (node and edge one-hot features in [-1, 1]) plus a node mask.

Importing this package is cheap: RDKit and torch are only imported by the submodules above.
"""
