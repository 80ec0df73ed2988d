"""Atomic, exclusive file writes: a reader (or a crash) never sees half a file.

The content goes to a temporary file in the target's folder, is flushed to disk, then takes
the target's name in one step: ``os.link`` when the target must not exist yet (it fails if
another process got there first, so two writers never both "win"), ``os.replace`` when
overwriting. A symbolic link at the target is refused, never followed. A run killed mid-write
leaves at most a hidden ``.NAME.*.tmp`` file, never a truncated file under the final name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class TargetExists(FileExistsError):
    """The target exists (or appeared while writing) and overwriting was not asked for."""


class UnsafeTarget(OSError):
    """The target is a symbolic link or a folder: never written through."""


def check_target(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Raise what ``write_bytes`` would raise about the target, without writing (a plan check)."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafeTarget(f"{path}: is a symbolic link; not written through (remove it or choose another name)")
    if path.is_dir():
        raise UnsafeTarget(f"{path}: is a folder")
    if path.exists() and not overwrite:
        raise TargetExists(f"{path}: exists (pass --overwrite to replace it)")


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (whatever the umask or an
    old file's mode). Raises TargetExists, or OSError for an unwritable folder."""
    path = Path(path)
    check_target(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            if path.is_symlink():
                raise UnsafeTarget(f"{path}: is a symbolic link; not written through")
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # atomic and exclusive: fails if the name is taken
            except FileExistsError:
                raise TargetExists(f"{path}: exists (pass --overwrite to replace it)") from None
            finally:
                os.unlink(temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def folder_is_writable(folder: str | os.PathLike) -> bool:
    """Whether files can be created in ``folder`` (created if missing): tried, not guessed."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False
