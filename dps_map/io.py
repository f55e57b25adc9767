"""File input/output: atomic writes, images, checkpoints. A leaf module (imports nothing of ours but errors and
signals: each write is a write section, so a stop signal waits for it)."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import MissingFileError, UnsafeCheckpointError, UserError
from .signals import write_section

log = logging.getLogger(__name__)


# -- atomic writes ------------------------------------------------------------------------------
def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see a partial file
    (and a SIGINT/SIGTERM under stop_on_signals waits for the rename)."""
    with write_section():
        _atomic_write_bytes(Path(path), data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"cannot write '{path}': {os.strerror(err.errno)} (no partial file was kept); free some "
                            "space and rerun the same command to resume") from err
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot write '{path}': {os.strerror(err.errno)} (no partial file was kept); make "
                            f"'{path.parent}' writable and rerun the same command to resume") from err
        raise


def remove_temp_files(run_dir) -> int:
    """Delete the temp files a killed writer (SIGKILL, node crash) left in a run directory; call it only
    while holding the directory's lock (no other writer can be mid-write). Returns how many."""
    run_dir, n = Path(run_dir), 0
    for sub in ("", "recon", "input", "label", "grids"):
        for tmp in (run_dir / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def atomic_save_npy(path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path, records: list[dict]) -> None:
    """Append records to a JSON-lines file atomically (the whole file is rewritten via rename).
    Lines that do not parse (a record cut short by a crash of another writer) are dropped on the way,
    with a warning, so a new record is never glued to a broken one."""
    path = Path(path)
    new = b"".join((json.dumps(r, sort_keys=True, default=_json_default) + "\n").encode() for r in records)
    with write_section():
        old = b"".join(line.encode() + b"\n" for line, _ in iter_jsonl(path) if _ is not None)
        atomic_write_bytes(path, old + new)


def read_json(path, fix: str):
    """The JSON object in a file; one that is not (truncated by a crash, or edited) raises UserError naming the
    file and `fix`, what the user can do about it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"'{path}' is not valid JSON (truncated or corrupt: {first_line(err)}): {fix}") from err
    if not isinstance(data, dict):
        raise UserError(f"'{path}' holds a JSON {type(data).__name__}, not an object (corrupt): {fix}")
    return data


def first_line(err) -> str:
    """The first non-blank line of an exception's message (or of a text); an empty one gives the exception's type
    (torch.load of a truncated file can raise EOFError(''))."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(err).__name__ if isinstance(err, BaseException) else "no message"


def iter_jsonl(path: Path):
    """(line, record or None if it does not parse) for each non-blank line; warns about bad lines."""
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            log.warning("%s line %d is not a complete JSON record (cut short by a crash?); skipped, its sample "
                        "is recomputed on resume: %.80s", path, number, line)
            record = None
        out.append((line, record))
    return out


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file (lines that do not parse are skipped with a warning)."""
    return [r for _, r in iter_jsonl(Path(path)) if r is not None]


def unique_records(records: list[dict], where="") -> tuple[list[dict], int]:
    """Each (id, k) once (the first record wins) and the number of duplicates dropped. Duplicates come
    from two processes that wrote one directory at once (before run.lock) and must not be counted twice."""
    seen, out = set(), []
    for r in records:
        key = (r.get("id"), r.get("k"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    if len(out) < len(records):
        log.warning("%s%d duplicate records of the same (id, k) ignored (each sample is counted once)",
                    f"{where}: " if where else "", len(records) - len(out))
    return out, len(records) - len(out)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.detach().cpu().tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def absolute_path(path):
    """A user path made absolute against the directory the command was started from (Hydra's
    original cwd inside an app, the current directory otherwise); None stays None."""
    if not path:
        return path
    from hydra.utils import to_absolute_path

    try:
        return to_absolute_path(str(path))
    except ValueError:  # outside a Hydra app
        return str(Path(path).absolute())


# -- images -------------------------------------------------------------------------------------
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return arr.permute(1, 2, 0).numpy()


def save_png(x: torch.Tensor, path) -> None:
    """Save one image (C, H, W) in [-1, 1] as PNG, atomically."""
    arr = to_uint8(x)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def pil_to_tensor(img: Image.Image, size: int) -> tuple[torch.Tensor, dict]:
    """RGB, centre-crop to a square, resize to size x size (bicubic), map to [-1, 1].

    Returns the (3, size, size) tensor and a record of what was done (original size and mode).
    """
    info = {"orig_size": list(img.size), "orig_mode": img.mode}
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray((np.clip(arr / hi, 0, 1) * 255).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BICUBIC)
    info["resized"] = side != size or w != h
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), info


def load_image(path, size: int) -> tuple[torch.Tensor, dict]:
    """Load an image file as a (3, size, size) tensor in [-1, 1]; raises UserError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_tensor(img, size)
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for truncated or corrupt files
        raise UserError(f"unreadable image '{path}': {err}") from err


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_id(path) -> str | None:
    """What identifies the weights at a configured path: 'sha256:<hex>' of a file (hashed once per process
    per path, size and mtime), 'folder:<path>' for a model folder (diffusers), None if nothing is there."""
    if not path:
        return None
    p = Path(absolute_path(path))
    if p.is_file():
        st = p.stat()
        return "sha256:" + _sha256_of(str(p), st.st_size, st.st_mtime_ns)
    return f"folder:{p}" if p.is_dir() else None


def prior_weights(prior_cfg) -> str | None:
    """weights_id of a prior config's weights ('random_init' for a seeded random network; None if the
    configured file is absent)."""
    if prior_cfg.get("random_init", False):
        return "random_init"
    return weights_id(prior_cfg.get("checkpoint") or prior_cfg.get("path"))


# -- checkpoints --------------------------------------------------------------------------------
def load_checkpoint(path, what: str, where: str, override: str) -> dict:
    """torch.load(path, weights_only=True) with clear errors for a missing, corrupt or unsafe file."""
    if path is None or not Path(path).is_file():
        raise MissingFileError(path, what, where, override)
    if Path(path).stat().st_size == 0:
        raise UserError(f"unreadable {what} '{path}' (an empty file, 0 bytes: an interrupted download?); "
                        f"get a fresh copy from {where}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        detail = first_line(detail.split("WeightsUnpickler error:", 1)[-1])
        glob = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
        if glob:
            raise UnsafeCheckpointError(
                f"refusing to load {what} '{path}': it needs pickle code execution (it references "
                f"{glob.group(1)}, which torch.load(weights_only=True) does not run). Re-save it as a plain "
                f"state dict of tensors, or get a clean copy from {where}") from err
        raise UserError(f"unreadable {what} '{path}' (not a valid torch checkpoint: {detail}); "
                        f"get a fresh copy from {where}") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"unreadable {what} '{path}' ({type(err).__name__}: {first_line(err)}); "
                        f"get a fresh copy from {where}") from err
