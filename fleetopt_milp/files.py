"""Atomic file writes with one-line errors.

Every file the package writes (plan files, simulation results) goes through
:func:`write_text_atomic`: the text is written to a temporary file in the target's folder,
flushed to disk, then renamed over the target with :func:`os.replace`. A reader therefore
sees either the previous file or the complete new one, never a truncated file, even when
the write is cut short (full disk, killed process). Devices and pipes (``/dev/stdout``)
are written in place. Failures raise
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
    if target.exists() and not target.is_file():
        return _write_special(target, text, what)
    real = Path(os.path.realpath(target))  # through a symlink: replace the file it names
    if real.exists() and not os.access(real, os.W_OK):  # a read-only file stays as it is
        raise _error(target, what, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    folder = real.parent
    data = text.encode("utf-8")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if real.exists():  # keep the permissions of the file being replaced
            os.chmod(tmp, real.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, real)
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


def _write_special(target: Path, text: str, what: str) -> Path:
    """Write to a device or pipe (``/dev/stdout``, ``/dev/null``, a FIFO) in place: it
    cannot be replaced by a rename, and it holds no previous file to protect."""
    try:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
    except OSError as exc:
        raise _error(target, what, exc) from None
    return target
