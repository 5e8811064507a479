"""The matrix as a run reads it: the matrix file and the catalogs beside it (or the embedded ones), with the
hashes a resumed run and every cell's fingerprint compare."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stackmatrix.domain import HostDriver
from stackmatrix.files.embedded import data_dir
from stackmatrix.files.readfile import read_bytes
from stackmatrix.matrix.catalog import Catalog, load_catalog
from stackmatrix.matrix.file import MatrixFile, load_matrix

if TYPE_CHECKING:
    from stackmatrix.asof import AsOf


CATALOG_FILES = ("gpus.toml", "models.toml", "triton.toml", "cuda.toml")


@dataclass(frozen=True)
class Loaded:
    catalog: Catalog
    spec: MatrixFile
    path: Path
    matrix_hash: str  # the matrix file and the catalogs: a resumed run's must be the same
    catalog_hash: str = ""  # the catalogs alone: part of every cell's fingerprint
    host: HostDriver | None = None  # this host's driver (NVML), for the targets that declare none


def load(matrix_path: Path, catalog_dir: Path | None = None, as_of: AsOf | None = None) -> Loaded:
    """The matrix file and the catalogs: ``catalog_dir``, else the matrix file's folder when it holds all three
    catalog files (a site's own catalogs beside its matrix), else the embedded ones; the catalog as it was at
    ``as_of`` (the releases out by then)."""
    # lexists: a catalog file that is a directory, a FIFO or a broken link beside the matrix is refused (exit 2),
    # not silently replaced by the embedded one
    if catalog_dir is None and all(os.path.lexists(matrix_path.parent / n) for n in CATALOG_FILES):
        catalog_dir = matrix_path.parent
    catalog = load_catalog(catalog_dir).as_of(as_of)
    spec = load_matrix(matrix_path, catalog)
    digest = hashlib.sha256(read_bytes(matrix_path, "a TOML file"))
    catalogs = hashlib.sha256()
    for name in CATALOG_FILES:
        data = read_bytes((catalog_dir or data_dir()) / name, "a TOML file")
        digest.update(data)
        catalogs.update(data)
    return Loaded(catalog, spec, matrix_path, digest.hexdigest()[:16], catalogs.hexdigest()[:16])
