"""One rule for every path a user types: `~` expanded, local paths made absolute, URLs untouched.

Applied once where a path enters gan_jax (train_and_evaluate, evaluate_run, Checkpointer, the data
loaders, the cache directories), so `--workdir workdirs/run` or `--config.data_dir=~/tfds` mean
the same from any caller. Orbax in particular refuses relative checkpoint paths, and a shell does
not expand the `~` of `--flag=~/dir`.
"""

from __future__ import annotations

import os
import re
from typing import overload

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL such as gs://bucket/run rather than a local path."""
    return _URL.match(os.fspath(path)) is not None


@overload
def resolve(path: None) -> None: ...
@overload
def resolve(path: str | os.PathLike) -> str: ...


def resolve(path: str | os.PathLike | None) -> str | None:
    """`path` with `~` expanded and made absolute (against the current directory), normalised.

    URLs (`gs://...`) are returned as they are; None and "" (which mean "the default" in
    configs) too.
    """
    if path is None:
        return None
    path = os.fspath(path)
    if not path or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(path))
