"""Reads PyTorch `.pth` state dicts with NumPy alone, and makes seeded random ones for tests.

A `torch.save` file is a pickle whose tensors point at raw storages kept beside it. Two layouts
exist, and the reader takes both:

- zip (torch >= 1.6's default): a zip archive holding `<root>/data.pkl`, one uncompressed entry
  `<root>/data/<key>` of raw bytes per storage, and (torch >= 1.10) `<root>/byteorder`.
- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row (a magic
  number, the protocol version 1001, a system-info dict, the object, the sorted list of storage
  keys) followed, for each key in that order, by an int64 element count and the raw bytes.
  pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` was published on 2019-05-27 (commit
  f64228c of mseitzer/pytorch-fid), in the torch 1.1 era, so it is expected to be of this kind.

In both, the object pickle names its storages by persistent ids: ("storage", storage type, key,
location, element count) in zip files, with a sixth item (view metadata) in legacy files; tensors
are rebuilt by `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

Unpickling calls whatever the pickle names, so `_Unpickler.find_class` admits only the names a
state dict of dense tensors uses, each resolved to a local stand-in (no torch import, no other
code runs), and refuses the rest before anything is called. The tensors come back as NumPy arrays
that own their memory.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import pathlib
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

# torch.serialization's constants for the legacy layout.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


def _bfloat16() -> np.dtype:
    """bfloat16 from ml_dtypes (which JAX installs); NumPy has none of its own."""
    try:
        import ml_dtypes  # noqa: PLC0415 (optional: only bfloat16 storages need it)
    except ImportError as error:
        raise TorchCheckpointError(
            "the checkpoint holds bfloat16 tensors; reading them needs ml_dtypes"
        ) from error
    return np.dtype(ml_dtypes.bfloat16)


# torch's typed-storage class names -> NumPy element types (little-endian as stored).
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


class TorchCheckpointError(ValueError):
    """The file is not a readable torch state dict of dense tensors."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch storage class (`torch.FloatStorage`, ...): only its dtype matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        kind = _STORAGE_DTYPES[self.name]
        return np.dtype(kind() if callable(kind) and not isinstance(kind, type) else kind)


@dataclasses.dataclass
class _Storage:
    """One storage: its element type and count; `data` (flat, that dtype) once it has been read."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
    """A tensor whose storage may not have been read yet (legacy files store data after the
    pickle), resolved to an array by `_materialise`."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchCheckpointError("a tensor's storage is missing from the file")
        if not self.size:
            return np.array(data[self.offset])  # a 0-d array, not a NumPy scalar
        extent = sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True) if n > 0)
        if min(self.size) > 0 and self.offset + extent >= data.size:
            raise TorchCheckpointError("a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _LazyTensor:
    """Stand-in for torch._utils._rebuild_tensor(_v2): (storage, offset, size, stride, ...)."""
    if not isinstance(storage, _Storage):
        raise TorchCheckpointError("a tensor is rebuilt from something that is not a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    return data


def _size(shape=()):
    """Stand-in for torch.Size, a tuple subclass."""
    return tuple(shape)


_TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
    # Protocol-2 pickles (the legacy default) encode `bytes` objects through this codec.
    ("_codecs", "encode"): lambda text, encoding="latin1": text.encode(encoding),
}
_TORCH_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})
_TORCH_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")


class _Unpickler(pickle.Unpickler):
    """Admits only `_TORCH_GLOBALS` (as local stand-ins) and resolves storage persistent ids."""

    def __init__(self, stream: BinaryIO, storage_for_id):
        super().__init__(stream, encoding="utf-8")
        self._storage_for_id = storage_for_id

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _TORCH_GLOBALS:
            raise TorchCheckpointError(
                f"refusing to unpickle global {module}.{name}: a state dict of tensors needs "
                f"only {', '.join(sorted(f'{m}.{n}' for m, n in _TORCH_GLOBALS))}"
            )
        return _TORCH_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise TorchCheckpointError(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise TorchCheckpointError(f"unsupported persistent id kind {kind!r} (not a storage)")
        return self._storage_for_id(pid[1:])


def _materialise(obj: Any) -> Any:
    """Replaces every _LazyTensor inside dicts / lists / tuples by its array."""
    if isinstance(obj, _LazyTensor):
        return obj.to_numpy()
    if isinstance(obj, Mapping):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _check_storage_type(storage_type: Any) -> np.dtype:
    if not isinstance(storage_type, _StorageType):
        raise TorchCheckpointError(f"unexpected storage type {storage_type!r}")
    return storage_type.dtype


def _read_zip(archive: zipfile.ZipFile) -> Any:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchCheckpointError(f"expected one <root>/data.pkl in the zip, found {pickles}")
    root = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if root + "byteorder" in archive.namelist():
        byteorder = archive.read(root + "byteorder").decode("ascii").strip()
    storages: dict[str, _Storage] = {}

    def storage_for_id(fields: tuple) -> _Storage:
        if len(fields) != 4:
            raise TorchCheckpointError(f"unexpected storage id {fields!r}")
        storage_type, key, _location, numel = fields
        dtype = _check_storage_type(storage_type)
        key = str(key)
        if key not in storages:
            try:
                raw = archive.read(f"{root}data/{key}")
            except KeyError as error:
                raise TorchCheckpointError(f"storage {key} is missing from the zip") from error
            order = "<" if byteorder == "little" else ">"
            data = np.frombuffer(raw, dtype=dtype.newbyteorder(order))
            storages[key] = _Storage(dtype, int(numel), data.astype(dtype))
        return storages[key]

    obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storage_for_id).load()
    return _materialise(obj)


def _read_legacy(stream: BinaryIO) -> Any:
    def header() -> Any:
        # The three header pickles hold only ints and a dict of ints and bools: no globals.
        return _Unpickler(stream, lambda fields: None).load()

    if header() != LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError("not a torch checkpoint (neither a zip nor the legacy magic)")
    if (version := header()) != LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(f"unsupported legacy protocol version {version}")
    sys_info = header()
    order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    storages: dict[str, _Storage] = {}

    def storage_for_id(fields: tuple) -> _Storage:
        if len(fields) != 5:
            raise TorchCheckpointError(f"unexpected legacy storage id {fields!r}")
        storage_type, key, _location, numel, view = fields
        if view is not None:
            raise TorchCheckpointError("storage views (torch < 0.4 files) are not supported")
        dtype = _check_storage_type(storage_type)
        key = str(key)
        storages.setdefault(key, _Storage(dtype, int(numel)))
        return storages[key]

    obj = _Unpickler(stream, storage_for_id).load()
    keys = _Unpickler(stream, lambda fields: None).load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchCheckpointError(f"the file lists storage {key} that no tensor uses")
        (count,) = struct.unpack(order + "q", stream.read(8))
        if count != storage.numel:
            raise TorchCheckpointError(
                f"storage {key}: {count} elements on disk, {storage.numel} in the pickle"
            )
        raw = stream.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise TorchCheckpointError(f"the file ends inside storage {key}")
        data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder(order))
        storage.data = data.astype(storage.dtype)
    return _materialise(obj)


def read_checkpoint(path: str | pathlib.Path) -> Any:
    """The object a `torch.save` file holds, with tensors as NumPy arrays; no torch needed.

    Handles both the zip layout and the legacy one (see the module docstring). Raises
    TorchCheckpointError for anything else, including pickles that name any global beyond those
    a state dict of dense tensors uses.
    """
    path = pathlib.Path(path)
    with path.open("rb") as stream:
        if zipfile.is_zipfile(stream):
            stream.seek(0)
            with zipfile.ZipFile(stream) as archive:
                return _read_zip(archive)
        stream.seek(0)
        try:
            return _read_legacy(stream)
        except (pickle.UnpicklingError, EOFError, struct.error) as error:
            raise TorchCheckpointError(
                f"{path} is not a readable torch checkpoint: {error}"
            ) from error


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """A state dict file as {name: array}; raises TorchCheckpointError unless it is one.

    Accepts a bare {name: tensor} mapping (an OrderedDict from `module.state_dict()` or a plain
    dict) and the common wrapper {"state_dict": {...}}.
    """
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and set(obj) == {"state_dict"}:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise TorchCheckpointError(f"{path} does not hold a state dict of named tensors")
    return dict(obj)


# ---------------------------------------------------------------------------------------------
# Seeded random state dicts: the same weights on both sides of a golden comparison.
# ---------------------------------------------------------------------------------------------


def _tensor_rng(name: str, seed: int) -> np.random.RandomState:
    # One stream per tensor, keyed by its name, so the values do not depend on the order in
    # which either side lists the tensors. RandomState's streams are frozen across NumPy versions.
    return np.random.RandomState([seed, zlib.crc32(name.encode())])


def seeded_state_dict(
    shapes: Mapping[str, tuple[int, ...]], seed: int = 0, *, fc_gain: float = 4.0
) -> dict[str, np.ndarray]:
    """A reproducible random float32 state dict of conv / BatchNorm / linear tensors.

    Drawn so that activations keep an O(1) scale through a deep ReLU network, with every
    BatchNorm statistic randomised (a test that left them at 0 and 1 would not see a swapped
    mean and variance): conv weights ~ N(0, 2 / fan_in) (He); BN weight ~ U(0.6, 1.4), bias ~
    N(0, 0.2^2), running_mean ~ N(0, 0.2^2), running_var ~ U(0.5, 2.0); linear weights ~
    N(0, fc_gain^2 / fan_in) and biases ~ N(0, 1) (a gain above 1 spreads the class logits, so an
    Inception Score computed on them is far from 1). `num_batches_tracked` entries become int64 0.

    Args:
      shapes: torch name -> torch shape ([out, in, kh, kw] for convs, [out, in] for linear).
      seed: the recipe's seed; each tensor's values depend only on (seed, its name).
      fc_gain: standard deviation of a linear layer's outputs per unit of input RMS.
    """
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        shape = tuple(int(d) for d in shape)
        rng = _tensor_rng(name, seed)
        leaf = name.rsplit(".", 1)[-1]
        is_bn = ".bn." in f".{name}" or leaf in ("running_mean", "running_var")
        if leaf == "num_batches_tracked":
            values = np.zeros(shape, np.int64)
        elif leaf == "weight" and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            gain = np.sqrt(2.0) if len(shape) == 4 else fc_gain
            values = rng.standard_normal(shape) * (gain / np.sqrt(fan_in))
        elif leaf == "running_var":
            values = rng.uniform(0.5, 2.0, shape)
        elif leaf == "weight" and is_bn:
            values = rng.uniform(0.6, 1.4, shape)
        elif leaf in ("bias", "running_mean") and is_bn:
            values = rng.standard_normal(shape) * 0.2
        elif leaf == "bias":
            values = rng.standard_normal(shape)
        else:
            raise ValueError(f"no recipe for tensor {name!r} of shape {shape}")
        out[name] = np.asarray(values, np.int64 if leaf == "num_batches_tracked" else np.float32)
    return out


def state_dict_digest(state_dict: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted name order: equal dicts, equal
    digests, whichever process (or framework) built them."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        array = np.ascontiguousarray(state_dict[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
