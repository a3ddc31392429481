"""The one exception type the exporter raises for problems the user can fix."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A bad input (checkpoint, vocabulary, output directory, option) or a failed check.

    The CLI prints it as a one-line ``error: ...`` message and exits non-zero.
    """

    def one_line(self) -> str:
        return " ".join(str(self).split())
