"""Atomic file writes with one-line errors.

Every file the package writes (plan files, simulation results) goes through
:func:`write_text_atomic`: the text is written to a temporary file in the target's folder,
flushed to disk, then renamed over the target with :func:`os.replace`. A reader therefore
sees either the previous file or the complete new one, never a truncated file, even when
the write is cut short (full disk, killed process). Failures raise
:class:`~fleetopt_milp.errors.FleetOptError` naming the path, the cause (from ``errno``)
and the fix.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import FleetOptError

__all__ = ["write_text_atomic"]

_CAUSES = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENOENT: "its folder does not exist; create the folder first",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder; give a file name inside it",
    errno.ENAMETOOLONG: "the name is too long; use a shorter path",
}


def _error(path: Path, what: str, exc: OSError) -> FleetOptError:
    cause = _CAUSES.get(exc.errno, f"{exc.strerror or exc}; choose another path")
    return FleetOptError(f"{path}: cannot write the {what}: {cause}")


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path.

    ``what`` names the file in error messages (``"plan file"``). Raises
    :class:`FleetOptError` for a folder, a missing folder, no permission, a read-only file
    system or a full disk; the previous file, if any, is left untouched.
    """
    target = Path(path)
    if target.is_dir():
        raise _error(target, what, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    folder = target.parent
    data = text.encode("utf-8")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():  # keep the permissions of the file being replaced
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _error(target, what, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target
