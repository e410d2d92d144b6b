"""How a foreign exception is quoted in our one-line messages."""

from uniformer_cli.errors import first_line


def test_first_line_takes_the_first_non_empty_line() -> None:
    assert first_line(RuntimeError("\n  PytorchStreamReader failed  \nat frame 3\n")) == "PytorchStreamReader failed"


def test_first_line_names_the_type_of_a_silent_exception() -> None:
    assert first_line(EOFError()) == "EOFError"
    assert first_line(ValueError("  \n ")) == "ValueError"
