# SPDX-License-Identifier: GPL-2.0-only
"""Writing output files safely when running as root."""
from __future__ import annotations

import os
import tempfile


def write_file_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a new temporary file renamed into place.

    memlens runs as root and the path often points into /tmp: opening it directly would
    follow a symlink planted there by another user and overwrite its target.  mkstemp
    creates the file with O_EXCL, and rename replaces a symlink instead of following it;
    readers also never see a half-written profile.  Permissions are those of a plain
    open(): 0666 minus the umask.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".memlens-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
