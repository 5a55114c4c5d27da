"""What a command prints while Ray runs: costsched's own lines, not Ray's.

Ray forwards everything its worker processes write (Train's per-report log
lines from every rank, Ray Data's execution notes, core-worker warnings,
deprecation warnings) to the driver's console, prefixed with the process name
and coloured. By default a command keeps only the lines costsched's code in
those processes marks with :data:`MARKER`, printed without Ray's prefix, and
Ray's own log level is ERROR. ``--verbose`` keeps Ray's output as Ray prints
it. Either way, nothing is coloured and no progress bar is drawn when stdout
is not a terminal. Everything still lands in Ray's log files
(``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

MARKER = "[costsched] "
"""Prefix of a line a run's Ray process (the Train controller, a worker) prints for
the user; the quiet console shows such lines, without the marker."""
RAY_PRINTER = "ray_print_logs"
"""Name under which ``ray.init`` registers its printer of forwarded worker output."""
COSTSCHED_PRINTER = "costsched_print_logs"

PLAIN_OUTPUT_ENV = {
    "RAY_COLOR_PREFIX": "0",  # Ray: no colour around "(pid=...)" prefixes
    "NO_COLOR": "1",  # the no-color.org convention, for libraries that follow it
    "TQDM_DISABLE": "1",  # tqdm >= 4.66: no progress bars
}
"""Environment set (unless already set) when stdout is not a terminal; processes
that Ray starts from this one inherit it."""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PlainText(logging.Filter):
    """Removes colour codes from a log record's text (Ray colours some of its own
    messages whatever the terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "\x1b[" in text:
            record.msg, record.args = ANSI_ESCAPE.sub("", text), None
        return True


def use_plain_output() -> None:
    """No colour codes and no progress bars when stdout is not a terminal."""
    if sys.stdout.isatty():
        return
    for name, value in PLAIN_OUTPUT_ENV.items():
        os.environ.setdefault(name, value)
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, PlainText) for f in handler.filters):
            handler.addFilter(PlainText())


def ray_logging_level(verbose: bool) -> int:
    """Level of Ray's own loggers in this process (``ray.init(logging_level=...)``)."""
    return logging.INFO if verbose else logging.ERROR


def costsched_lines(lines: Iterable[str]) -> list[str]:
    """The lines of a forwarded batch that costsched marked, without the marker."""
    return [line[len(MARKER):] for line in lines if line.startswith(MARKER)]


def _print_costsched_lines(batch: dict[str, Any]) -> None:
    shown = costsched_lines(batch.get("lines", ()))
    if shown:
        sink = sys.stderr if batch.get("is_err") else sys.stdout
        print("\n".join(shown), file=sink, flush=True)


def show_only_costsched_lines() -> None:
    """Replace Ray's printer of forwarded worker output (set up by ``ray.init`` with
    ``log_to_driver``) with one that prints only :func:`costsched_lines`.

    A Ray without that printer keeps its own output.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # a Ray that forwards worker output some other way
        return
    names = [name for name, _handler in getattr(dispatcher, "handlers", ())]
    if RAY_PRINTER not in names:
        return
    dispatcher.remove_handler(RAY_PRINTER)
    dispatcher.remove_handler(COSTSCHED_PRINTER)
    dispatcher.add_handler(COSTSCHED_PRINTER, _print_costsched_lines)
