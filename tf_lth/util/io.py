"""Atomic file writes (temp file + rename), atomic folders (:func:`staged_dir`) and checked reads, so a
killed run can always resume and an export never leaves half a folder."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import pickle
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"))


def write_npz(path, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TfLthError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise TfLthError(f"{path} is corrupt ({e}); delete it or restart that round") from None


# What numpy raises for a damaged .npz: a cut or garbled zip (BadZipFile, EOFError, zlib.error, a
# member the directory names but cannot find: KeyError), a bad array header or pickle (ValueError,
# UnpicklingError), or the file itself unreadable (OSError).
DAMAGED_NPZ = (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, ValueError, pickle.UnpicklingError)


def read_npz(path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise TfLthError(f"{path} is missing") from None
    except DAMAGED_NPZ as e:
        raise TfLthError(f"{path} is corrupt ({type(e).__name__}: {e}); delete it or restart that round") from None


@contextmanager
def staged_dir(path: Path):
    """A temp folder beside ``path`` that replaces ``path`` only when the block succeeds; the
    previous content is moved aside first and deleted last. OSErrors become one-line errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
    except OSError as e:
        raise unwritable_export(path, e) from None
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise unwritable_export(path, e) from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def unwritable_export(path: Path, e: OSError) -> TfLthError:
    where = f" ({e.filename})" if e.filename else ""
    return TfLthError(f"cannot write the export to {path}: {e.strerror or e}{where}")
