"""Placeholder until the train command lands (replaced by its owner)."""

from uniformer_cli.errors import UniformerError


def train() -> None:
    """Not implemented yet."""
    raise UniformerError("train is not implemented yet")
