"""A job's ``entrypoint``: ``package.module:function``, imported strictly.

The function is the job's training code (see :mod:`costsched.api`). It must be
importable where the job is submitted and on every worker: shipped with
``ray job submit --working-dir .`` (the working directory is on the workers'
path), or installed as a package. The current directory is searched first, as
``python -m`` does, so a folder of user code works from where it is submitted.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from costsched.errors import ConfigError

BUILTIN_ENTRYPOINT = "costsched.training.loop:train_loop"
"""The built-in classification loop, run by jobs that name no entrypoint."""
_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def check_entrypoint_syntax(spec: str) -> None:
    """``spec`` must read ``package.module:function``."""
    if not _SPEC.match(spec):
        raise ConfigError(f"`entrypoint` {spec!r} must read `package.module:function`, "
                          "e.g. `mytrain.loop:train_loop`")


def import_entrypoint(spec: str) -> Callable[[dict[str, Any]], Any]:
    """The function ``spec`` names; a :class:`ConfigError` naming the module or the
    attribute when it cannot be imported or is not callable."""
    check_entrypoint_syntax(spec)
    module_name, attribute = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"`entrypoint` {spec}: cannot import module `{module_name}` ({exc}); ship its "
            "folder with `ray job submit --working-dir` or install it") from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(f"`entrypoint` {spec}: importing module `{module_name}` raised "
                          f"{type(exc).__name__}: {exc}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise ConfigError(f"`entrypoint` {spec}: module `{module_name}` has no attribute "
                          f"`{attribute}`")
    if not callable(function):
        raise ConfigError(f"`entrypoint` {spec}: `{module_name}.{attribute}` is not a function")
    return function
