"""Placeholder until the convert command lands (replaced by its owner)."""

from uniformer_cli.errors import UniformerError


def convert() -> None:
    """Not implemented yet."""
    raise UniformerError("convert is not implemented yet")
