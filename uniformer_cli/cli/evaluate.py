"""Placeholder until the evaluate command lands (replaced by its owner)."""

from uniformer_cli.errors import UniformerError


def evaluate() -> None:
    """Not implemented yet."""
    raise UniformerError("evaluate is not implemented yet")
