"""Reading TOML files into pydantic models, with errors that name the file, the key and the bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from stackmatrix.errors import BadInput
from stackmatrix.files.readfile import parse_toml, read_bytes

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every file schema: unknown keys are errors, records are frozen."""

    # inf and nan are not numbers any of our files means (a memory of inf GiB fits every model)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def read_toml(path: Path) -> dict[str, Any]:
    """A regular UTF-8 TOML file (never blocks on a FIFO; a directory, binary or deeply nested file is exit 2)."""
    return parse_toml(path, read_bytes(path, "a TOML file"))


def validate(path: Path | str, schema: type[M], data: dict[str, Any]) -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        unknown = err["type"] == "extra_forbidden"
        expected = "no such key (unknown key)" if unknown else err["msg"]
        value = err.get("input")
        if unknown and isinstance(value, str):  # text under an unknown key may be a token pasted into the wrong file
            value = f"a string of {len(value)} characters"
        raise BadInput(str(path), _key(tuple(err["loc"])), value, expected) from None
    except RecursionError:  # pydantic-core guards its own recursion; this is the last net
        raise BadInput(str(path), "<top level>", "values nested too deeply", "the file's schema") from None


def load(path: Path, schema: type[M]) -> M:
    return validate(path, schema, read_toml(path))
