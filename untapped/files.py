"""Writing files safely, and the small conversions every writer needs.

Checkpoints, metrics, figures, cached classifiers and reference bundles are
all written through :func:`atomic_output`: the content goes to a temporary
file beside the target, which replaces the target only once complete, so a
crash, a full disk or Ctrl-C never leaves a half-written file and never
destroys the previous one.
"""

import contextlib
import glob
import math
import os
import pathlib
import re
import socket
import tempfile
import time

import numpy as np


def one_line(exc):
    """An exception's message on one line (for one-line error reports)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def os_reason(exc):
    """Why an :class:`OSError` happened, in a few words: ``No space left on device``, ``Permission denied``.

    HDF5's errors carry the system's reason deep in a long message (its
    time, file descriptor and buffer address); the errno's text says it all.
    """
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return one_line(exc)


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name the same existing file or folder (False if either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def default_file_mode():
    """``0o666`` less the process umask: what ``open()`` gives a new file (``mkstemp`` gives 0o600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


#: Temporary files of a write older than this, whose name does not say which
#: process writes them (written before names did), count as left by a crash.
UNOWNED_TEMPORARY_AGE = 600.0


def _owner_tag():
    """``<pid>@<host>``: which process writes a temporary file, in its name."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _writer_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path, suffix=".tmp"):
    """Remove the temporary files of earlier writes of ``path`` whose writer died (``kill -9``, power loss).

    A temporary file of :func:`atomic_output` is named
    ``.<name>.<pid>@<host>.<random><suffix>``; it is stale when ``<host>`` is
    this machine and no process ``<pid>`` exists. A file of the pattern
    ``.<name>.*<suffix>`` without that tag (written before names carried it)
    is stale when untouched for :data:`UNOWNED_TEMPORARY_AGE` seconds. Files
    of live writers and of other machines are kept. Returns the removed paths.
    """
    path = pathlib.Path(path)
    owned = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)@(.+)\.[^.]+{re.escape(suffix)}$")
    host = socket.gethostname()
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"):
        match = owned.match(candidate.name)
        try:
            if match:
                stale = match.group(2) == host and not _writer_alive(int(match.group(1)))
            else:
                stale = time.time() - candidate.stat().st_mtime > UNOWNED_TEMPORARY_AGE
            if stale:
                candidate.unlink()
                removed.append(candidate)
        except FileNotFoundError:  # removed meanwhile by another writer's clean-up
            continue
    return removed


@contextlib.contextmanager
def atomic_output(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; when the block succeeds, it replaces ``path``.

    The temporary file gets the mode ``open()`` would give and is synced to
    disk before the rename, which is atomic on POSIX: readers see the old
    file or the whole new one. On any exception the temporary file is
    removed and ``path`` is left as it was. Creating the temporary file
    raises :class:`OSError` if the folder is not writable. Temporary files
    that earlier writes of ``path`` left behind when killed are removed
    first (:func:`remove_stale_temporaries`).
    """
    path = pathlib.Path(path)
    remove_stale_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        os.chmod(tmp, default_file_mode())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonable(value):
    """``value`` with NumPy arrays and scalars, tuples and paths turned into JSON types.

    Non-finite floats become ``None`` (NaN) or ``"inf"``/``"-inf"``, which
    strict JSON readers accept.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


#: The lock file of a folder that an untapped process writes to.
LOCK_NAME = ".untapped.lock"


class FolderLocked(Exception):
    """Another process holds the folder's lock; ``pid`` is its process id, if it wrote one."""

    def __init__(self, folder, pid):
        super().__init__(f"{folder} is being written by another untapped process (pid {pid or 'unknown'})")
        self.folder, self.pid = folder, pid


class FolderLock:
    """An exclusive lock on a folder, for one writer at a time (``fcntl.flock`` on ``.untapped.lock``).

    The kernel releases the lock when the holding process ends, however it
    ends, so a crash never leaves a folder locked; the lock file itself
    stays and is harmless. :meth:`acquire` raises :class:`FolderLocked`
    at once, rather than waiting, if another process holds it.
    """

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self._file = None

    def acquire(self):
        import fcntl

        if self._file is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip()
            handle.close()
            raise FolderLocked(self.folder, pid) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
