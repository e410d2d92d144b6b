"""Placeholder until the predict command lands (replaced by its owner)."""

from uniformer_cli.errors import UniformerError


def predict() -> None:
    """Not implemented yet."""
    raise UniformerError("predict is not implemented yet")
