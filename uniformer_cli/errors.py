"""The one exception type that the CLI turns into a one-line message and a non-zero exit, and how a
foreign exception becomes part of such a line."""


class UniformerError(Exception):
    """A user-facing failure: bad input, missing file, wrong checkpoint, unknown model.

    The message is printed as is, on one line, so it must say what went wrong and what to do.
    """


class VideoError(UniformerError):
    """A video (or frame folder) that cannot be opened or decoded."""


class CheckpointError(UniformerError):
    """A weights file that cannot be read safely or does not fit the model."""


class DatasetError(UniformerError):
    """A dataset root, list or label file that is missing or malformed."""


class Terminated(BaseException):
    """SIGTERM, raised where a job saves its work as on Ctrl-C; the command then exits 143. A
    BaseException, like KeyboardInterrupt, so that no `except Exception` takes it for a failed video."""


def stop_reason(stop: BaseException) -> str:
    """The signal behind a `KeyboardInterrupt` or `Terminated`, in words, for the records it cuts short."""
    return "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C (SIGINT)"


class WriteError(UniformerError):
    """An output that cannot be written: a full disk, a read-only file system, missing permissions."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type name: how a foreign error
    (torch, PyAV, huggingface_hub) is quoted inside one of our one-line messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
