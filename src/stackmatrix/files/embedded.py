"""The folders the package ships beside its code: ``matrix/`` (catalogs and the default matrix), ``probes/`` (the
scripts run inside a stack's environment) and ``images/`` (the cell images' Dockerfile templates). Packaged under
``_data`` in a wheel, the repository's folders in a checkout. One module, low in the house, so that code of any
layer finds them without importing the layer that uses them most."""

from __future__ import annotations

from pathlib import Path


def _embedded(name: str) -> Path:
    package = Path(__file__).resolve().parents[1]  # stackmatrix/
    packaged = package / "_data" / name
    return packaged if packaged.is_dir() else package.parents[1] / name


def data_dir() -> Path:
    """The embedded ``matrix/``."""
    return _embedded("matrix")


def images_dir() -> Path:
    """The embedded ``images/``."""
    return _embedded("images")


def probes_dir() -> Path:
    """The embedded ``probes/``."""
    return _embedded("probes")
