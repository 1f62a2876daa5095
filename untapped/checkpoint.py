"""HDF5 checkpoints: save, load and resume a training run.

A checkpoint holds everything that the next epoch of a run depends on, so
that training 2 epochs gives the same parameters, bit for bit, as training 1
epoch, saving, loading into a fresh model and training 1 more.

Layout (format ``untapped-checkpoint``, :data:`FORMAT_VERSION`):

``/params/<net>/<layer>/<W|b>``
    float32 parameters by name; the attribute ``order`` of ``/params`` (JSON
    list) gives Lasagne's ``get_all_params`` order (classifier, encoder,
    decoder; W before b).
``/optimizer/adam/t``, ``/optimizer/adam/m/<param>``, ``/optimizer/adam/v/<param>``
    Lasagne Adam's step count and moments; ``order`` attribute as above.
``/rng/<name>``
    one scalar string dataset per generator holding the JSON of its NumPy
    ``bit_generator.state``: the model's noise generators
    (``train/<source>/<noise>``, ``evaluate/<source>/<noise>``) and the
    epoch shuffles (``shuffle/train``, ``shuffle/evaluate``).
``/data/<name>``
    the split that the run uses: ``unlabeled_index``, ``unfeatured_y``,
    ``unfeatured_z``, ``eval_unfeatured_z``, ``labeled_index``,
    ``eval_index``; attribute ``seed``.
``/history/<key>``
    float64 per-epoch series (``epoch``, ``learning_rate``, ``seconds``,
    ``train/<term>``, ``eval/epoch``, ``eval/<term>``); ``order`` attribute.
root attributes
    ``format``, ``format_version``, ``epoch`` (epochs completed), ``seed``,
    ``config`` (JSON: the model's ``get_params()`` under ``model_params``
    plus the run options; read with older names brought up to date,
    :func:`untapped.presets.upgrade_config`), ``versions`` (JSON), ``mode``, ``blas__ldflags``,
    ``environment`` (JSON), ``created`` (UTC, ISO 8601), ``checksums``
    (``"sha256"``), ``attributes_sha256`` (below).

Every dataset carries the attribute ``sha256``: the SHA-256 of its dtype,
shape and bytes (of its UTF-8 text for the generator states), verified on
load, so a damaged byte is a :class:`CheckpointError` naming the dataset,
never a silently different resume. The root attribute
``attributes_sha256`` is the SHA-256 of every other attribute of the root
and the groups (names and values, as sorted JSON), so an edited ``epoch``
or ``config`` is refused too; and the ``epoch`` must match the history's
epochs. Checkpoints written before checksums (no ``checksums`` attribute)
load unverified, and those written before attribute checksums (no
``attributes_sha256``) with their datasets verified only; the format
version is the same, since older readers ignore the new attributes.

The file is built in memory, then its bytes go to a temporary file in the
target's folder, which is renamed over the target only when complete
(:func:`os.replace`), so a crash, a full disk or a Ctrl-C never leaves a
half-written checkpoint and never destroys the previous one; temporary
files that a killed write left behind are removed by the next write of the
same checkpoint (:func:`untapped.files.atomic_output`).
Every failure to read or apply a checkpoint is a :class:`CheckpointError`
with a one-line message naming the file.
"""

import copy
import dataclasses
import datetime
import hashlib
import io
import json
import pathlib
from collections import OrderedDict

import h5py
import numpy as np

from untapped.backend import environment
from untapped.files import atomic_output, jsonable, one_line, os_reason
from untapped.presets import upgrade_config

FORMAT = "untapped-checkpoint"
FORMAT_VERSION = 1
#: The digest every dataset carries (its attribute of that name), and the root attribute declaring it.
CHECKSUM = "sha256"
#: The root attribute holding the digest of every other attribute (:func:`_attributes_digest`).
ATTRIBUTES_CHECKSUM = "attributes_sha256"

#: Arrays of an :class:`untapped.data.MNISTSplit` stored under ``/data``.
SPLIT_ARRAYS = ("labeled_index", "eval_index", "unlabeled_index", "unfeatured_y", "unfeatured_z", "eval_unfeatured_z")


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or does not fit the model or data; one-line message."""


@dataclasses.dataclass
class Checkpoint:
    """The content of one checkpoint file, in memory.

    ``params``, ``optimizer`` and ``data`` map names to arrays; ``rng`` maps
    generator names to NumPy bit-generator state dicts; ``history`` maps
    series names to lists of floats; ``config`` is a JSON-able dict.
    """

    epoch: int
    params: OrderedDict
    optimizer: OrderedDict
    rng: OrderedDict
    data: OrderedDict = dataclasses.field(default_factory=OrderedDict)
    history: OrderedDict = dataclasses.field(default_factory=OrderedDict)
    config: dict = dataclasses.field(default_factory=dict)
    seed: int = None
    environment: dict = dataclasses.field(default_factory=dict)
    path: pathlib.Path = None

    # -- capture and apply ----------------------------------------------------

    @classmethod
    def from_model(cls, model, *, epoch, rng=None, split=None, history=None, config=None):
        """A copy of the model's current state (parameters, Adam, generators) plus run state.

        ``rng`` adds generator states beyond the model's (the epoch shuffles);
        ``split`` is the data split whose arrays go under ``/data``. Arrays are
        copied, so the snapshot does not change when training goes on.
        """
        rngs = OrderedDict(copy.deepcopy(model.rng_states()))
        rngs.update(copy.deepcopy(dict(rng or {})))
        full_config = {"model_params": jsonable(model.get_params())}
        full_config.update(jsonable(config or {}))
        return cls(
            epoch=int(epoch),
            params=OrderedDict((k, np.array(v)) for k, v in model.param_values_by_name().items()),
            optimizer=OrderedDict((k, np.array(v)) for k, v in model.optimizer_state().items()),
            rng=rngs,
            data=split_arrays(split) if split is not None else OrderedDict(),
            history=OrderedDict((k, list(v)) for k, v in (history or {}).items()),
            config=full_config,
            seed=int(model.seed),
            environment=environment(model.mode),
        )

    def restore(self, model):
        """Set the model's parameters, Adam state and noise generators from this checkpoint.

        Names and shapes are checked first, so a mismatch leaves the model unchanged.
        """
        where = self.path or "checkpoint"
        expected = OrderedDict((k, v.shape) for k, v in model.param_values_by_name().items())
        _check_arrays(where, "parameter", self.params, expected)
        expected = OrderedDict((k, np.shape(v)) for k, v in model.optimizer_state().items())
        _check_arrays(where, "optimizer state", self.optimizer, expected)
        missing = [name for name in model.rng_states() if name not in self.rng]
        if missing:
            raise CheckpointError(f"{where}: no state for generator(s) {', '.join(missing[:3])}")
        try:
            model.set_param_values_by_name(self.params)
            model.set_optimizer_state(self.optimizer)
            model.set_rng_states({k: self.rng[k] for k in model.rng_states()})
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{where}: does not fit the model ({one_line(exc)})") from None

    def check_split(self, split):
        """Raise :class:`CheckpointError` unless ``split`` has the arrays stored under ``/data``."""
        where = self.path or "checkpoint"
        current = split_arrays(split)
        for name, stored in self.data.items():
            if name not in current:
                continue
            now = current[name]
            if stored.shape != now.shape or not np.array_equal(stored, now):
                raise CheckpointError(
                    f"{where}: the data split differs from the checkpoint's ({name}); "
                    "the run used other data, another seed or another --subset"
                )

    # -- files ------------------------------------------------------------------

    def save(self, path):
        """Write this checkpoint to ``path`` atomically (temporary file + rename)."""
        path = pathlib.Path(path)
        # Built in memory, then written as bytes: a full disk or a lost file
        # system is then one OSError of the write, not HDF5's errors while
        # it flushes its caches (some of them raised where none can catch them).
        try:
            image = io.BytesIO()
            with h5py.File(image, "w") as f:
                self._write(f)
            with atomic_output(path) as tmp:
                tmp.write_bytes(image.getbuffer())
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot write the checkpoint ({os_reason(exc)})") from None
        self.path = path
        return path

    def _write(self, f):
        env = self.environment or {}
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["epoch"] = self.epoch
        f.attrs["seed"] = -1 if self.seed is None else int(self.seed)
        f.attrs["config"] = json.dumps(self.config, sort_keys=True)
        f.attrs["versions"] = json.dumps(env.get("versions", {}), sort_keys=True)
        f.attrs["mode"] = str(env.get("mode", ""))
        f.attrs["blas__ldflags"] = str(env.get("blas__ldflags", ""))
        f.attrs["environment"] = json.dumps(env, sort_keys=True)
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["checksums"] = CHECKSUM
        for group, arrays in (("params", self.params), ("optimizer", self.optimizer)):
            g = f.create_group(group)
            g.attrs["order"] = json.dumps(list(arrays))
            for name, value in arrays.items():
                _create(g, name, np.asarray(value))
        g = f.create_group("rng")
        g.attrs["order"] = json.dumps(list(self.rng))
        for name, state in self.rng.items():
            _create(g, name, json.dumps(state))
        g = f.create_group("data")
        g.attrs["order"] = json.dumps(list(self.data))
        g.attrs["seed"] = -1 if self.seed is None else int(self.seed)
        for name, value in self.data.items():
            _create(g, name, np.asarray(value))
        g = f.create_group("history")
        g.attrs["order"] = json.dumps(list(self.history))
        for name, values in self.history.items():
            _create(g, name, np.asarray(values, dtype=np.float64).reshape(-1))
        f.attrs[ATTRIBUTES_CHECKSUM] = _attributes_digest(f)


def save(path, model, *, epoch, rng=None, split=None, history=None, config=None):
    """Capture ``model`` (:meth:`Checkpoint.from_model`) and write it to ``path`` atomically."""
    ckpt = Checkpoint.from_model(model, epoch=epoch, rng=rng, split=split, history=history, config=config)
    ckpt.save(path)
    return ckpt


def load(path):
    """Read a checkpoint file into a :class:`Checkpoint`, checking its format and consistency."""
    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:  # unreadable: no permission, an I/O error
        raise CheckpointError(f"{path}: cannot read the checkpoint ({os_reason(exc)})") from None
    if not hdf5:
        raise CheckpointError(f"{path}: not an HDF5 file, so not an untapped checkpoint")
    try:
        f = h5py.File(path, "r")
    except PermissionError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({os_reason(exc)})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: truncated or corrupt HDF5 file ({one_line(exc)})") from None
    try:
        with f:
            return _read(f, path)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({one_line(exc)})") from None


def _read(f, path):
    fmt = _attr(f, "format")
    if fmt is None:
        raise CheckpointError(f"{path}: an HDF5 file but not an untapped checkpoint (no 'format' attribute)")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: format {fmt!r}, not an untapped checkpoint ({FORMAT!r})")
    version = _attr(f, "format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this untapped reads version {FORMAT_VERSION}"
        )
    for group in ("params", "optimizer", "rng", "data", "history"):
        if group not in f:
            raise CheckpointError(f"{path}: incomplete checkpoint, no /{group} group")
    checksums = _attr(f, "checksums")
    if checksums not in (None, CHECKSUM):
        raise CheckpointError(f"{path}: checksums of kind {checksums!r}, this untapped verifies {CHECKSUM!r}")
    verify = checksums is not None
    stored = _attr(f, ATTRIBUTES_CHECKSUM)
    if verify and stored is not None and stored != _attributes_digest(f):
        raise CheckpointError(
            f"{path}: its attributes (epoch, config ...) were altered (their checksum does not match)"
        )
    params = _read_arrays(f["params"], path, verify)
    optimizer = _read_arrays(f["optimizer"], path, verify)
    for name, value in params.items():
        for moment in ("m", "v"):
            key = f"adam/{moment}/{name}"
            if key in optimizer and optimizer[key].shape != value.shape:
                raise CheckpointError(
                    f"{path}: optimizer state {key} has shape {optimizer[key].shape}, its parameter {value.shape}"
                )
    rng = OrderedDict()
    for name in _order(f["rng"], path):
        rng[name] = json.loads(_read_dataset(f["rng"], name, path, verify, text=True))
    data = _read_arrays(f["data"], path, verify)
    history = OrderedDict((k, [float(x) for x in v]) for k, v in _read_arrays(f["history"], path, verify).items())
    config = upgrade_config(json.loads(_attr(f, "config", "{}")))
    env = json.loads(_attr(f, "environment", "{}"))
    seed = _attr(f, "seed")
    epoch = int(_attr(f, "epoch", 0))
    trained = history.get("epoch")
    if epoch < 0 or (trained is not None and len(trained) != epoch):
        raise CheckpointError(
            f"{path}: epoch {epoch} does not match its history of {len(trained or [])} epochs; the file was altered"
        )
    return Checkpoint(
        epoch=epoch,
        params=params,
        optimizer=optimizer,
        rng=rng,
        data=data,
        history=history,
        config=config,
        seed=None if seed is None or seed < 0 else int(seed),
        environment=env,
        path=path,
    )


def _attr(f, name, default=None):
    if name not in f.attrs:
        return default
    value = f.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _string(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _order(group, path):
    if "order" not in group.attrs:
        raise CheckpointError(f"{path}: incomplete checkpoint, /{group.name.strip('/')} has no 'order'")
    return json.loads(_string(group.attrs["order"]))


def _attributes_digest(f):
    """SHA-256 of the attributes of ``f``'s root and groups (but :data:`ATTRIBUTES_CHECKSUM`), as sorted JSON."""
    attributes = {
        f"{holder.name}:{name}": _attr(holder, name)
        for holder in [f, *(f[g] for g in sorted(f) if isinstance(f[g], h5py.Group))]
        for name in holder.attrs
        if not (holder is f and name == ATTRIBUTES_CHECKSUM)
    }
    return _digest(json.dumps(attributes, sort_keys=True))


def _digest(value):
    """SHA-256 of a text's UTF-8 bytes, or of an array's dtype, shape and bytes (hex)."""
    if isinstance(value, str):
        return hashlib.sha256(value.encode()).hexdigest()
    array = np.ascontiguousarray(value)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def _create(group, name, value):
    group.create_dataset(name, data=value).attrs[CHECKSUM] = _digest(value)


def _read_dataset(group, name, path, verify, text=False):
    """The value of ``group[name]`` (an array, or a str with ``text``), its checksum verified with ``verify``."""
    if name not in group:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {group.name}/{name}")
    dataset = group[name]
    value = dataset[()]
    value = _string(value) if text else np.asarray(value)
    if verify:
        stored = _attr(dataset, CHECKSUM)
        if stored is None:
            raise CheckpointError(f"{path}: dataset {dataset.name} has no checksum; the file was altered")
        if stored != _digest(value):
            raise CheckpointError(f"{path}: dataset {dataset.name} is damaged (its checksum does not match)")
    return value


def _read_arrays(group, path, verify):
    return OrderedDict((name, _read_dataset(group, name, path, verify)) for name in _order(group, path))


def _check_arrays(where, what, arrays, expected):
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise CheckpointError(
            f"{where}: no {what} {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    for name, shape in expected.items():
        if np.shape(arrays[name]) != tuple(shape):
            raise CheckpointError(
                f"{where}: {what} {name} has shape {np.shape(arrays[name])}, the model expects {tuple(shape)}"
            )
    extra = [k for k in arrays if k not in expected]
    if extra:
        raise CheckpointError(f"{where}: {what} {extra[0]} is not in the model")


def split_arrays(split):
    """The arrays of ``split`` stored under ``/data`` (those it has)."""
    return OrderedDict((name, np.asarray(getattr(split, name))) for name in SPLIT_ARRAYS if hasattr(split, name))


