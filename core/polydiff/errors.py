"""User-facing errors. The CLI prints their message as one line and exits non-zero; Python callers get
the exception with the same words."""


class PolydiffError(ValueError):
    """A problem with what the user asked for or gave (a bad file, an unknown name, a bad option)."""


class InputError(PolydiffError):
    """An input file or value that cannot be used; the message names the file, column or row."""


class UnknownName(PolydiffError):
    """An unknown modality, sampler, schedule, scorer or pretrained model."""


class MissingDependency(PolydiffError, ImportError):
    """An optional package is needed; the message names what to pip install."""
