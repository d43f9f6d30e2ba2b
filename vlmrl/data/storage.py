"""Read and write :class:`OfflineDataset` files: HDF5 (D4RL layout) and ``.npz``.

HDF5 layout (D4RL-compatible: ``h5py.File(p)["observations"][:]`` works as for a D4RL file)::

    observations (N, ...) float32   actions (N, ...)   rewards (N,) float32
    terminals (N,) bool             timeouts (N,) bool  frames (N, H, W, 3) uint8   [optional]
    infos/<key> (N, ...)            attrs: format="vlmrl-offline/1", metadata=<JSON>

The ``.npz`` file holds the same keys (``infos/<key>`` included) plus a 0-d ``metadata`` JSON string.
Writes go to a temporary file renamed into place, so a crash never leaves a half-written dataset; reads check
everything and raise one :class:`~vlmrl.data.dataset.DatasetError` naming the file and the problem.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from vlmrl.data.dataset import REQUIRED_KEYS, DatasetError, OfflineDataset
from vlmrl.runs import atomic_path

FORMAT = "vlmrl-offline/1"
_OPTIONAL_KEYS = ("frames",)


def save_dataset(dataset: OfflineDataset, path: str | Path, compression: str | None = "gzip") -> Path:
    """Write ``dataset`` to ``path`` (``.h5``/``.hdf5`` or ``.npz``) atomically; returns the path."""
    path = Path(path)
    kind = _kind(path)
    with atomic_path(path) as tmp:
        if kind == "hdf5":
            _write_hdf5(dataset, tmp, compression)
        else:
            _write_npz(dataset, tmp)
    return path


def load_dataset(path: str | Path) -> OfflineDataset:
    """Read and validate a dataset file; raises :class:`DatasetError` on any problem."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(str(path), "no such file; check the dataset path (e.g. agents.dataset=...)")
    kind = _kind(path)
    arrays, infos, metadata = _read_hdf5(path) if kind == "hdf5" else _read_npz(path)
    return OfflineDataset(
        **{k: arrays.get(k) for k in (*REQUIRED_KEYS, *_OPTIONAL_KEYS)},
        infos=infos,
        metadata=metadata,
        source=str(path),
    )


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    if suffix == ".npz":
        return "npz"
    raise DatasetError(str(path), f"unknown dataset extension '{suffix}'; use .h5, .hdf5 or .npz")


def _arrays_of(dataset: OfflineDataset) -> dict[str, np.ndarray]:
    out = {k: getattr(dataset, k) for k in REQUIRED_KEYS}
    if dataset.frames is not None:
        out["frames"] = dataset.frames
    out.update({f"infos/{k}": v for k, v in dataset.infos.items()})
    return out


def _write_hdf5(dataset: OfflineDataset, path: Path, compression: str | None) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["metadata"] = json.dumps(dataset.metadata)
        for key, arr in _arrays_of(dataset).items():
            big = arr.nbytes > 1 << 16
            chunks = (min(len(arr), 256), *arr.shape[1:]) if big else None
            f.create_dataset(key, data=arr, compression=compression if big else None, chunks=chunks)


def _read_hdf5(path: Path) -> tuple[dict, dict, dict]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            str(path), f"cannot open as HDF5 (truncated or corrupt file: {exc}); re-write or re-download it"
        ) from None
    try:
        with f:
            arrays = {}
            for key in (*REQUIRED_KEYS, *_OPTIONAL_KEYS):
                if key in f:
                    arrays[key] = _read_hdf5_array(f, key, path)
            infos = {}
            if "infos" in f:
                for key in f["infos"]:
                    infos[key] = _read_hdf5_array(f, f"infos/{key}", path)
            metadata = _parse_metadata(f.attrs.get("metadata", "{}"), path)
    except (OSError, RuntimeError, KeyError) as exc:
        raise DatasetError(str(path), f"unreadable HDF5 content (truncated or corrupt: {exc})") from None
    return arrays, infos, metadata


def _read_hdf5_array(f, key: str, path: Path) -> np.ndarray:
    try:
        return f[key][()]
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetError(
            str(path), f"cannot read '{key}' (truncated or corrupt file: {exc}); re-write or re-download it"
        ) from None


def _write_npz(dataset: OfflineDataset, path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, metadata=np.array(json.dumps(dataset.metadata)), **_arrays_of(dataset))


def _read_npz(path: Path) -> tuple[dict, dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {key: z[key] for key in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DatasetError(
            str(path), f"cannot read as .npz (truncated or corrupt file: {exc}); re-write or re-download it"
        ) from None
    metadata = _parse_metadata(raw.pop("metadata", np.array("{}")).item(), path)
    infos = {k.split("/", 1)[1]: v for k, v in raw.items() if k.startswith("infos/")}
    arrays = {k: v for k, v in raw.items() if not k.startswith("infos/")}
    return arrays, infos, metadata


def _parse_metadata(text, path: Path) -> dict:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DatasetError(str(path), f"metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetError(str(path), f"metadata must be a JSON object, got {type(meta).__name__}")
    return meta
