"""Reading TOML files into pydantic models, with errors that name the file, the key and the bad value."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from stackmatrix.errors import BadInput

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every file schema: unknown keys are errors, records are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BadInput(str(path), "<file>", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(str(path), "<syntax>", str(exc), "valid TOML") from None


def validate(path: Path | str, schema: type[M], data: dict[str, Any]) -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        expected = "no such key (unknown key)" if err["type"] == "extra_forbidden" else err["msg"]
        raise BadInput(str(path), _key(tuple(err["loc"])), err.get("input"), expected) from None


def load(path: Path, schema: type[M]) -> M:
    return validate(path, schema, read_toml(path))
