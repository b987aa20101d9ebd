"""Feature extraction and the on-disk feature cache.

Layout of the cache for a profile (``features/<profile>/``)::

    id_train_feats.pt  id_train_labels.pt
    id_test_feats.pt   id_test_labels.pt
    ood_test_feats.pt  ood_test_labels.pt
    meta.json          (model, weights, datasets, splits, classes, counts, dims, package version)

Every file is written to a temporary name and renamed into place, and ``meta.json`` last, so an
interrupted run never leaves a cache that looks complete. ``meta.json`` records the SHA-256 of
every tensor file (``digests``). On read, the meta must describe the active profile, every file
must match its digest and every tensor must load with the expected shape and dtype;
otherwise the split is extracted again (with a message saying why), never used silently. A
file changed behind the cache's back (even with tensors of the right shape) is caught by its
digest. The values are checked for NaN/inf once, when extracted (a model giving them is an
error, nothing is cached); a cache read does not scan them again, the digest proves they are
the bytes written then. The results of :func:`cached` are checked the same way.

A read-only cache (the grader's sandbox mounts it so) is used as it is; what would have to be
written (a re-extraction, a new :func:`cached` result) is computed and used without being saved.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from ..methods.progress import progress_bar as tqdm  # a widget in JupyterLab, stdout lines in other kernels

from ._io import atomic_write, atomic_write_text, folder_lock
from .. import __version__
from .data import FEATURE_SPLITS, feature_dataset
from .models import MINICLIP_NAME, MINICLIP_WEIGHTS, load_clip, sha256, split_visual
from .profiles import Profile, features_dir, get_profile, weights_cache_dir

FEATURE_KEYS = tuple(f"{s}_{kind}" for s in FEATURE_SPLITS for kind in ("feats", "labels"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, loader, device: str | torch.device | None = None,
                     progress: bool = True, desc: str = "features"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over every batch of ``loader``.

    ``loader`` yields ``(images (B, 3, H, W), labels (B,))``. Returns ``feats`` float32
    ``(N, D)`` and ``labels`` int64 ``(N,)``, both on the CPU.
    """
    device = torch.device(device) if device is not None else default_device()
    backbone = backbone.to(device).eval()
    feats, labels = [], []
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    start = time.time()
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images, targets in loader:
            out = backbone(images.to(device, non_blocking=True))
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(targets, dtype=torch.int64))
            bar.update(len(images))
    feats_t = torch.cat(feats) if feats else torch.empty(0, 0)
    seconds = max(time.time() - start, 1e-9)
    if progress:
        print(f"{desc}: {len(feats_t)} images in {seconds:.1f} s "
              f"({len(feats_t) / seconds:.0f} images/s) on {device}")
    return feats_t, torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)


@functools.cache
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of a file, computed once per process for a given (path, mtime, size)."""
    return sha256(path)


def weights_digest(path: Path = MINICLIP_WEIGHTS) -> str:
    """SHA-256 of the shipped weights, or ``"missing"``; hashed once per process (the file
    is 13 MB and every :func:`load_features` / :func:`cached` call needs it)."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


def expected_meta(profile: str | Profile | None = None) -> dict:
    """What ``meta.json`` must say for the cache of ``profile`` to be used."""
    p = get_profile(profile)
    weights = p.pretrained
    if p.model_name == MINICLIP_NAME:
        weights = f"package:{MINICLIP_WEIGHTS.name}:sha256:" + weights_digest(MINICLIP_WEIGHTS)
    splits = {}
    for split in FEATURE_SPLITS:
        ood = split == "ood_test"
        splits[split] = {
            "dataset": p.ood_dataset if ood else p.id_dataset,
            "split": "train" if split == "id_train" else "test",
            "classes": list(p.ood_classes if ood else p.id_classes)
            if (p.ood_classes if ood else p.id_classes) is not None else "all",
            "count": p.counts[split],
        }
    return {
        "profile": p.name,
        "model": p.model_name,
        "pretrained": weights,
        "features": "visual trunk output, before the projection head",
        "feature_dim": p.feature_dim,
        "embed_dim": p.embed_dim,
        "id_class_names": list(p.id_class_names) if p.id_class_names else None,
        "splits": splits,
    }


def _atomic_save(obj, path: Path) -> str | None:
    """JSON for ``*.json``, ``torch.save`` otherwise; written atomically.

    Returns the SHA-256 of the bytes written (``None`` for JSON).
    """
    if path.suffix == ".json":
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))
        return None
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def _try_save(obj, path: Path) -> str | None:
    """:func:`_atomic_save`, or ``None`` when the folder is read-only (the value is still used)."""
    try:
        return _atomic_save(obj, path)
    except OSError as err:
        if not os.access(path.parent, os.W_OK) or getattr(err, "errno", None) in (13, 30):
            return None
        raise


def _read_verified(path: Path, digest: str | None, what: str) -> bytes | None:
    """The bytes of a cached file if they match ``digest``; else ``None`` with a reason printed."""
    if not path.is_file():
        return None
    if not digest:
        print(f"cache: meta.json records no digest for {path.name}; {what}")
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        print(f"cache: {path.name} is unreadable ({type(err).__name__}); {what}")
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        print(f"cache: {path.name} does not match the SHA-256 digest in meta.json (the file "
              f"was changed after it was written); {what}")
        return None
    return data


def _load_tensor(path: Path, shape: tuple, dtype: torch.dtype,
                 digest: str | None = None) -> torch.Tensor | None:
    """Load a cached tensor; ``None`` (with a reason printed) when absent or invalid."""
    data = _read_verified(path, digest, "extracting again")
    if data is None:
        return None
    try:
        t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        print(f"cache: {path.name} is unreadable ({type(err).__name__}); extracting again")
        return None
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        print(f"cache: {path.name} has shape/dtype {got}, expected {shape} {dtype}; extracting again")
        return None
    # No scan of the values here: they were checked for NaN/inf once, when extracted and
    # written (_load_or_extract), and the digest proves these are the bytes written then.
    # The methods validate what they are given at their own boundary, once.
    return t


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _comparable(meta: dict | None) -> dict | None:
    if meta is None:
        return None
    return {k: v for k, v in meta.items()
            if k not in ("package_version", "extracted", "digests", "cached")}


def load_features(profile: str | Profile | None = None, device: str | torch.device | None = None,
                  progress: bool = True, batch_size: int | None = None,
                  num_workers: int = 0) -> dict[str, torch.Tensor]:
    """Features of the three splits of ``profile``, from the cache or freshly extracted.

    Returns a dict with keys ``id_train_feats``, ``id_train_labels``, ``id_test_feats``,
    ``id_test_labels``, ``ood_test_feats``, ``ood_test_labels``: float32 ``(N, feature_dim)``
    features and int64 ``(N,)`` labels on the CPU. ID labels are ``0..K-1``.
    """
    p = get_profile(profile)
    folder = features_dir(p)
    # two processes that find the cache missing extract it once: the second waits, then reads
    with _cache_lock(folder, "features"):
        return _load_or_extract(p, folder, device, progress, batch_size, num_workers)


def _load_or_extract(p: Profile, folder: Path, device, progress, batch_size,
                     num_workers) -> dict[str, torch.Tensor]:
    want = expected_meta(p)
    raw_meta = _read_meta(folder)
    have = _comparable(raw_meta) or None  # a meta.json with only `cached` digests: no features
    digests = dict((raw_meta or {}).get("digests") or {})
    out: dict[str, torch.Tensor] = {}
    missing = []
    if have is not None and have != want:
        print(f"cache: {folder}/meta.json describes another setup; extracting again")
    for split in FEATURE_SPLITS:
        n = p.counts[split]
        feats = labels = None
        if have == want:
            feats = _load_tensor(folder / f"{split}_feats.pt", (n, p.feature_dim), torch.float32,
                                 digests.get(f"{split}_feats"))
            labels = _load_tensor(folder / f"{split}_labels.pt", (n,), torch.int64,
                                  digests.get(f"{split}_labels"))
        if feats is None or labels is None:
            missing.append(split)
        else:
            out[f"{split}_feats"], out[f"{split}_labels"] = feats, labels
    if not missing:
        return out

    device = torch.device(device) if device is not None else default_device()
    model, preprocess, _ = load_clip(p, device=device)
    backbone, _ = split_visual(model)
    writable = _writable(folder)
    if writable and (folder / "meta.json").exists():
        os.unlink(folder / "meta.json")  # the cache is incomplete until every split is written
    if have != want:
        digests = {}
    for split in missing:
        ds = feature_dataset(p, split, transform=preprocess)
        if len(ds) != p.counts[split]:
            raise RuntimeError(f"{split} has {len(ds)} images, the profile expects {p.counts[split]}")
        loader = DataLoader(ds, batch_size=batch_size or p.batch_size, shuffle=False,
                            num_workers=num_workers)
        feats, labels = extract_features(backbone, loader, device, progress, desc=split)
        bad = int((~torch.isfinite(feats)).any(dim=1).sum())
        if bad:  # checked once, here: a cached file holds finite values (see _load_tensor)
            raise RuntimeError(
                f"the image tower gave NaN or infinite features for {bad} of {len(feats)} "
                f"{split} images, so nothing was cached; the model weights are probably "
                f"damaged: re-create them (python -m ood_utils train-miniclip for miniclip, "
                f"or delete {weights_cache_dir()} and download again)")
        if writable:
            folder.mkdir(parents=True, exist_ok=True)
            digests[f"{split}_feats"] = _atomic_save(feats, folder / f"{split}_feats.pt")
            digests[f"{split}_labels"] = _atomic_save(labels, folder / f"{split}_labels.pt")
        out[f"{split}_feats"], out[f"{split}_labels"] = feats, labels
    if writable:
        meta = dict(want, package_version=__version__, digests=digests,
                    extracted=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _atomic_save(meta, folder / "meta.json")
    else:
        print(f"cache: {folder} is read-only; the features were extracted but not saved")
    return {k: out[k] for k in FEATURE_KEYS}


def _writable(folder: Path) -> bool:
    """Whether the cache folder (or the nearest existing folder above it) can be written."""
    for f in [folder, *folder.parents]:
        if f.exists():
            return os.access(f, os.W_OK)
    return False


def _cache_lock(folder: Path, name: str):
    """:func:`ood_utils.course._io.folder_lock` on a writable cache; nothing on a read-only one."""
    return folder_lock(folder, name) if _writable(folder) else contextlib.nullcontext(False)


def cached(name: str, compute: Callable[[], dict], profile: str | Profile | None = None,
           meta: dict | None = None) -> dict:
    """Return ``compute()``'s dict of tensors, cached in ``features/<profile>/<name>.pt``.

    The cache is keyed by ``meta`` (any JSON-serialisable dict, e.g. a seed and the
    hyper-parameters) plus the feature cache's own meta; a mismatch, an unreadable file or a
    file that does not match the digest recorded in ``meta.json`` (``cached`` entry) recomputes
    and rewrites it atomically. In a read-only cache the value is computed and not saved.
    """
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"cache name {name!r} must be letters, digits, '_' or '-'")
    p = get_profile(profile)
    path = features_dir(p) / f"{name}.pt"
    key = json.dumps({"meta": meta or {}, "features": expected_meta(p)}, sort_keys=True)
    with _cache_lock(path.parent, "cached"):  # computed once when processes ask together
        return _cached_locked(name, compute, path, key)


def _cached_locked(name: str, compute: Callable[[], dict], path: Path, key: str) -> dict:
    recorded = ((_read_meta(path.parent) or {}).get("cached") or {}).get(name)
    data = _read_verified(path, recorded, "recomputing") if path.is_file() else None
    if data is not None:
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if isinstance(blob, dict) and blob.get("key") == key:
                return blob["value"]
            print(f"cache: {path.name} was made with other settings; recomputing")
        except Exception as err:
            warnings.warn(f"cache: {path.name} is unreadable ({type(err).__name__}); recomputing")
    value = compute()
    digest = _try_save({"key": key, "value": value}, path)
    if digest is not None:
        _record_cached(path.parent, name, digest)
    return value


def _record_cached(folder: Path, name: str, digest: str) -> None:
    """Add ``name``'s digest to the ``cached`` entry of ``meta.json`` (if the cache has one)."""
    with _cache_lock(folder, "features"):  # meta.json is read, changed and written back
        meta = _read_meta(folder) or {}
        meta.setdefault("cached", {})[name] = digest
        _try_save(meta, folder / "meta.json")
