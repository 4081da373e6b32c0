"""One error boundary for every command: expected failures are one line on stderr and exit status 2.

A user's mistake or an environment problem (a bad configuration value, a checkpoint that does not
fit, an unreadable or missing file, no permission, a full disk, a file that is not text, a malformed
submission) is reported as ``error: <file or key>: <problem>``, never as a traceback. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from detectors.errors import CheckpointError, ConfigError, MediaError

F = TypeVar("F", bound=Callable[..., Any])
USAGE_ERROR = 2  # argparse's status for a bad command line: the same family of mistakes

_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long",
}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose command-line mistakes are one line too (status 2), pointing
    to ``--help`` instead of printing the whole usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum`` (``--batch-size 0`` is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types a command reports in one line (the benchmark loader's and the bundler's
    are imported lazily: not every command needs them)."""
    from export.benchmark_loader import SubmissionError
    from export.bundle import BundleError

    return (
        ConfigError,
        CheckpointError,
        MediaError,
        SubmissionError,
        BundleError,
        OSError,
        UnicodeError,
        RecursionError,
    )


def one_line(error: BaseException) -> str:
    """``error``'s message on one line, naming the file for operating-system errors."""
    if isinstance(error, OSError) and not isinstance(error, (ConfigError, CheckpointError, MediaError)):
        standard = os.strerror(error.errno) if error.errno else None
        if error.strerror and error.strerror != standard:  # the raiser's own words say more
            problem = error.strerror
        else:
            problem = _OS_PROBLEMS.get(error.errno or -1) or (error.strerror or str(error)).lower()
        target = error.filename if error.filename is not None else None
        text = f"{target}: {problem}" if target is not None else problem
    elif isinstance(error, UnicodeError):
        text = f"not a text file in the expected encoding ({error})"
    elif isinstance(error, RecursionError):
        text = "input nested too deeply to process"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def report(error: BaseException, stream: Any = None) -> int:
    print(f"error: {one_line(error)}", file=stream or sys.stderr)
    return USAGE_ERROR


def command(main: F) -> F:
    """Decorate a command's ``main(argv) -> int``: expected failures become one line on stderr and
    the returned status 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except expected_errors() as error:
            return report(error)

    return wrapper  # type: ignore[return-value]


__all__ = ["ArgumentParser", "USAGE_ERROR", "command", "expected_errors", "int_at_least", "one_line", "report"]
