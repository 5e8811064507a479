"""One exception class per exit code (cibuildwheel's habit): the CLI maps them to exit statuses."""

from __future__ import annotations


class StackmatrixError(Exception):
    exit_code = 1


class GateRegression(StackmatrixError):
    """A probe failed where the user asked for a pass."""

    exit_code = 1


class BadInput(StackmatrixError):
    """Matrix, catalog or CLI input is wrong: says which file, key, value and what was expected."""

    exit_code = 2

    def __init__(self, where: str, key: str, value: object, expected: str) -> None:
        self.where, self.key, self.value, self.expected = where, key, value, expected
        super().__init__(f"{where}: key {key!r}: got {value!r}; expected {expected}")


class NothingSelected(StackmatrixError):
    exit_code = 3


class InfraUnavailable(StackmatrixError):
    """The package index, Docker or Slurm cannot be reached."""

    exit_code = 4


class Interrupted(StackmatrixError):
    exit_code = 130
