"""Atomic writes and safe checkpoint loading.

Rules of the project implemented here:
- outputs are written to a temporary file in the destination folder and moved into place with ``os.replace``,
  so a crash or Ctrl-C never leaves a half-written file under the final name;
- checkpoints are read with safetensors or ``torch.load(weights_only=True)``: arbitrary pickled objects from user
  files are never executed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from vexpress.errors import InputError, WeightsError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("vexpress.io")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The signals that stop a run cleanly (Ctrl-C, ``kill``): their Python handlers raise in the main thread.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for a few statements; they are raised again when the block ends.

    For the gap between creating a temporary file and recording it where the clean-up will find it: a stop signal
    handled in that gap raises before the ``try`` that removes the file, which then outlives the run. Inside the block
    the two signals are only recorded (Python-level handlers: masking the main thread would not do, because the kernel
    hands a process-wide signal to any thread that does not mask it, e.g. torch's workers, and Python then runs the
    handler in the main thread all the same). A signal that is ignored, or handled outside Python, is left alone.
    Only the main thread can set handlers; elsewhere this is a no-op. Keep the block short and free of waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {}
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if current is None or current == signal.SIG_IGN:
            continue
        saved[sig] = current
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)  # the restored handler runs now (e.g. SystemExit), after the file is recorded


#: temporary files and folders of this process that are neither published nor removed yet
_LIVE_TEMPORARIES: set[Path] = set()
_LIVE_LOCK = threading.Lock()


def make_temporary(directory: str | os.PathLike, name: str, *, folder: bool = False) -> Path:
    """Create ``.<name>.XXXXXXXX.tmp-part`` (a file, or a folder) in ``directory`` and record it until
    :func:`forget_temporary`, so that a run ended by force can still remove it (:func:`discard_temporaries`).
    Call it inside :func:`deferred_signals`, and forget the path once it is renamed into place or removed."""
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp-part", dir=directory))
    else:
        fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp-part", dir=directory)
        os.close(fd)
        tmp = Path(path)
    with _LIVE_LOCK:
        _LIVE_TEMPORARIES.add(tmp)
    return tmp


def forget_temporary(tmp: Path | None) -> None:
    """``tmp`` was published or removed: a forced exit has nothing to do with it any more."""
    if tmp is not None:
        with _LIVE_LOCK:
            _LIVE_TEMPORARIES.discard(tmp)


def discard_temporaries() -> int:
    """Remove every temporary file and folder this process still holds; returns how many. For a run that is being
    ended by force (the stop watchdog of the command-line tools), whose ``finally`` blocks will not run."""
    with _LIVE_LOCK:
        live = list(_LIVE_TEMPORARIES)
        _LIVE_TEMPORARIES.clear()
    for tmp in live:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return len(live)


def _tmp_path(path: Path) -> Path:
    return make_temporary(path.parent, path.name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary name keeps the destination's suffix last-but-one (``.name.XXXX.tmp-part``) so writers that pick a
    format from the suffix should be given the format explicitly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with deferred_signals():  # a stop signal lands after ``tmp`` is set, so the clean-up below removes it
            tmp = _tmp_path(path)
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the final file the usual permissions (umask applied)
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        forget_temporary(tmp)


def publish_folder(tmp: Path, directory: Path) -> None:
    """Move the complete folder ``tmp`` to ``directory``, replacing what is there: the old folder is renamed away
    first, so ``directory`` is at every moment either the old complete folder or the new one."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``directory`` (``.name.XXXX.tmp-part``, mode 0755, a name of its own
    so that concurrent writers never share one); when the block succeeds it replaces ``directory``
    (:func:`publish_folder`), on any error it is removed.

    ``replace=False`` is for caches whose content is a function of their name: when another process has published
    ``directory`` meanwhile, that folder is kept (readers may have it open) and this one is dropped."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with deferred_signals():  # see atomic_path
            tmp = make_temporary(directory.parent, directory.name, folder=True)
        tmp.chmod(0o755)
        yield tmp
        if replace:
            publish_folder(tmp, directory)
        else:
            try:  # one atomic step: renaming onto a folder another job has filled fails instead of replacing it
                os.rename(tmp, directory)
            except OSError:
                if not directory.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        forget_temporary(tmp)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on the file ``path`` for the block; wait while another job holds it.

    For work that many jobs may start at once on one shared folder and that only one should do (a cache built in
    place, resumably): the others wait, then find the result. The lock dies with its process, so a killed job never
    leaves one behind. The lock file itself stays (removing it would let two jobs lock two different files). Where
    ``fcntl`` is missing this holds nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.info("waiting for another job that is building %s (lock %s)", what or path.stem, path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """:func:`atomic_path` for outputs that must appear together: yields one temporary path per destination (each
    next to its final name); only when the block succeeds are they all renamed into place, and on any error none is
    (the temporary files are removed)."""
    finals = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for p in finals:
            p.parent.mkdir(parents=True, exist_ok=True)
            with deferred_signals():  # see atomic_path
                tmps.append(_tmp_path(p))
        yield list(tmps)
        mode = 0o666 & ~_umask()
        for tmp in tmps:
            if tmp.exists():
                os.chmod(tmp, mode)
        for tmp, p in zip(tmps, finals):
            os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        for tmp in tmps:
            forget_temporary(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any):
    """``open()`` that only shows the file under its final name once it is completely written."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Atomically save a flat dict of tensors: safetensors for ``.safetensors``, else ``torch.save``."""
    import torch

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
        else:
            torch.save(tensors, tmp)


def load_tensors(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Load a flat tensor dict safely (safetensors, or ``torch.load(weights_only=True)`` for .bin/.pth/.ckpt/.pt).

    A ``{"state_dict": {...}}`` wrapper (Lightning / AnimateDiff style) is unwrapped. Anything that is not a
    mapping of tensors is refused with a :class:`WeightsError` naming the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} file not found: {path} (check the path in your config)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse error becomes a one-line user error
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise WeightsError(
            f"cannot read {what} {path}: {msg} (only safetensors or weights-only torch files are accepted)"
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{what} {path} is not a flat mapping of tensors")
    return dict(obj)


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early (before any compute) when ``path`` cannot be created; returns the resolved path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory; give a file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write the {what} {path}: {parent} is a file, not a folder; choose another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create folder {parent} for the {what}: {err.strerror or err}") from err
    probe_writable(parent, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {path} exists and is not writable; choose another output path")
    return path.resolve()


def probe_writable(folder: str | os.PathLike, what: str = "output") -> Path:
    """Fail early when no file can be created in ``folder``: a temporary file is created there and removed.

    Unlike ``os.access`` this also catches what root cannot write (read-only mounts, ``/proc``).
    """
    folder = Path(folder)
    with deferred_signals():  # a stop signal cannot strand the probe file between its creation and removal
        try:
            fd, name = tempfile.mkstemp(prefix=".vexpress-write-test.", suffix=".tmp-part", dir=folder)
        except OSError as err:
            raise InputError(f"{what} folder {folder} is not writable ({err.strerror or err}); choose another "
                             "output path") from err
        os.close(fd)
        os.unlink(name)
    return folder


def check_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove it accepts files (before any compute); returns the resolved path."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is an existing file; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the {what} {folder}: {err.strerror or err}; choose another path") from err
    probe_writable(folder, what)
    return folder.resolve()


@contextlib.contextmanager
def removing_empty_new_folders(*folders: str | os.PathLike) -> Iterator[None]:
    """Remove on exit (success or failure) those of ``folders``, and of their missing ancestors, that did not exist
    on entry and are empty then: a failed run leaves no empty folders behind."""
    new: set[Path] = set()
    for f in folders:
        p = Path(f).expanduser().absolute()
        while not p.exists() and p != p.parent:
            new.add(p)
            p = p.parent
    try:
        yield
    finally:
        for p in sorted(new, key=lambda q: len(q.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()
