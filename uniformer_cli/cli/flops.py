"""Placeholder until the flops command lands (replaced by its owner)."""

from uniformer_cli.errors import UniformerError


def flops() -> None:
    """Not implemented yet."""
    raise UniformerError("flops is not implemented yet")
