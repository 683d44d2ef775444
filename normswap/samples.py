"""Unlabelled input samples for calibration, distillation and evaluation.

Accepted: a NumPy array (one input), a tuple/list of arrays (several inputs), a
`tf.data.Dataset`, or any iterable of batches (each an array or a tuple of arrays); labelled
data as Keras's `fit` takes it, (x, y) or (x, y, sample_weight), gives its x. They
become a list of batches, each a list of float arrays (one per model input), checked
against the model's input shapes: every problem is one clear UsageError.
"""

import hashlib
import os

import numpy as np

from normswap.defaults import BATCH_SIZE
from normswap.errors import UsageError


def load_array_file(path, key=None, what="--calibrate"):
    """The array in an .npy file, or in an .npz file under `key` (default: its first array)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"{what}: '{path}' is not a file.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if isinstance(data, np.ndarray):
                if key:
                    raise UsageError(f"{what}: '{path}' is an .npy file with one array; "
                                     "drop the key option.")
                return np.array(data)
            names = list(data.files)
            if not names:
                raise UsageError(f"{what}: '{path}' holds no arrays.")
            if key is None:
                key = names[0]
            if key not in names:
                raise UsageError(f"{what}: '{path}' has no array '{key}'; it has "
                                 f"{', '.join(names)}.")
            return np.array(data[key])
    except UsageError:
        raise
    except (ValueError, OSError) as error:
        raise UsageError(f"{what}: '{path}' is not a NumPy .npy/.npz file ({error}).") from error


def has_array(path, name):
    """Whether `path` is an .npz file holding an array called `name` (False otherwise)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return not isinstance(data, np.ndarray) and name in data.files
    except (ValueError, OSError):
        return False


def _iterate(data):
    """Yield batches from an array, tuple of arrays, Dataset or iterable."""
    if isinstance(data, np.ndarray) or (isinstance(data, (tuple, list)) and data
                                        and all(isinstance(a, np.ndarray) for a in data)):
        yield data
        return
    if hasattr(data, "as_numpy_iterator"):
        yield from data.as_numpy_iterator()
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise UsageError(f"Samples must be an array, a tuple of arrays, a tf.data.Dataset or "
                         f"an iterable of batches, got {type(data).__name__}.") from None
    yield from iterator


def _without_labels(batch, inputs):
    """The inputs of a batch given as Keras's (x, y) or (x, y, sample_weight), as `fit`
    takes them (a labelled tf.data.Dataset, say): x. The labels and weights are not used.

    `inputs`: the model's input tensors. A tuple/list of 2 or 3 is such a batch when its
    first element is one batch of the model's inputs (an array shaped like the one input,
    or a tuple/list of one such array per input) and its second is not (labels: an array,
    a list or a dict shaped otherwise). Two batches of inputs side by side — or an
    autoencoder's (x, x)? — stay as they are, and the caller refuses them as too many
    arrays rather than dropping the second as labels.
    """
    if (isinstance(batch, (tuple, list)) and len(batch) in (2, 3)
            and _is_input_batch(batch[0], inputs) and not _is_input_batch(batch[1], inputs)):
        return batch[0]
    return batch


def _is_input_batch(value, inputs):
    """Whether `value` is one batch of the model's inputs: an array shaped like the input,
    or, for several inputs, a tuple/list of such arrays, one per input."""
    if len(inputs) == 1:
        return _fits(value, inputs[0])
    return (isinstance(value, (tuple, list)) and len(value) == len(inputs)
            and all(_fits(v, t) for v, t in zip(value, inputs)))


def _fits(array, tensor):
    """Whether `array` is an array shaped like a batch of `tensor`'s samples."""
    shape = getattr(array, "shape", None)
    if shape is None:
        return False
    expected = tuple(tensor.shape[1:])
    return len(shape) == len(expected) + 1 and all(
        e is None or e == a for e, a in zip(expected, tuple(shape)[1:]))


def _as_arrays(batch, model, what):
    batch = _without_labels(batch, model.inputs)
    arrays = list(batch) if isinstance(batch, (tuple, list)) else [batch]
    if len(arrays) != len(model.inputs):
        hint = (" (labelled data whose labels are shaped like the inputs, such as an "
                "autoencoder's (x, x): give x alone)"
                if len(model.inputs) == 1 and len(arrays) in (2, 3)
                and all(_fits(a, model.inputs[0]) for a in arrays[:2]) else "")
        raise UsageError(f"{what}: a batch has {len(arrays)} array(s) but the model has "
                         f"{len(model.inputs)} input(s){hint}.")
    checked = []
    for array, tensor in zip(arrays, model.inputs):
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise UsageError(f"{what}: expected numbers, got an array of dtype {array.dtype}.")
        if not _fits(array, tensor):
            raise UsageError(f"{what}: samples of shape {array.shape[1:]} do not fit the model "
                             f"input '{tensor.name}' of shape {tuple(tensor.shape[1:])}.")
        array = array.astype(np.float32) if array.dtype.kind in "biu" else array
        if not np.all(np.isfinite(array)):
            raise UsageError(f"{what}: the samples contain NaN or infinite values.")
        checked.append(array)
    if len({len(a) for a in checked}) != 1:
        raise UsageError(f"{what}: the arrays of one batch have different sample counts.")
    return checked


def input_batches(model, data, *, samples=None, batch_size=BATCH_SIZE, what="samples"):
    """`data` as a list of batches (lists of arrays, one per input), at most `samples` samples.

    Batches are taken in order; a single array is cut into batches of `batch_size`.
    """
    batches, total = [], 0
    data = _without_labels(data, model.inputs)  # (x, y) as a whole: x
    for batch in _iterate(data):
        arrays = _as_arrays(batch, model, what)
        for start in range(0, len(arrays[0]), batch_size):
            if samples is not None and total >= samples:
                break
            stop = start + batch_size
            if samples is not None:
                stop = min(stop, start + samples - total)
            piece = [a[start:stop] for a in arrays]
            if len(piece[0]):
                batches.append(piece)
                total += len(piece[0])
        if samples is not None and total >= samples:
            break
    if total == 0:
        raise UsageError(f"{what}: no samples given (empty array or iterable).")
    return batches


SHIFTS = ((0, 0), (2, 0), (0, 2), (-2, -2))


def image_axes(array):
    """(height axis, width axis) of a batch of images (N, H, W, C) or (N, C, H, W) with at
    most 4 channels, else None."""
    if array.ndim != 4:
        return None
    if array.shape[-1] <= 4 < min(array.shape[1:3]):
        return 1, 2
    if array.shape[1] <= 4 < min(array.shape[2:4]):
        return 2, 3
    return None


def _shifted(images, shift, axes):
    """`images` moved by `shift` pixels along `axes`, the edge repeated where they left."""
    pad = [(0, 0)] * images.ndim
    slices = [slice(None)] * images.ndim
    for amount, axis in zip(shift, axes):
        pad[axis] = (max(amount, 0), max(-amount, 0))
        slices[axis] = slice(max(-amount, 0), images.shape[axis] + max(-amount, 0))
    return np.pad(images, pad, mode="edge")[tuple(slices)]


def augmented(batches):
    """The batches followed by their mirror images and small shifts (8× the samples):
    for single-input models of images only; other batches come back unchanged. Unlabelled
    samples are few; a block fitted on them alone overfits."""
    if len(batches[0]) != 1 or image_axes(batches[0][0]) is None:
        return batches
    result = []
    for flip in (False, True):
        for shift in SHIFTS:
            for (images,) in batches:
                axes = image_axes(images)
                moved = np.flip(images, axes[1]) if flip else images
                result.append([_shifted(moved, shift, axes)])
    return result


def subsample(array, samples, seed):
    """`samples` rows of `array` chosen with `seed` (all rows, in order, if it has fewer)."""
    arrays = list(array) if isinstance(array, (tuple, list)) else [array]
    count = len(arrays[0])
    if samples is None or count <= samples:
        return array
    rows = np.sort(np.random.default_rng(seed).choice(count, samples, replace=False))
    picked = [a[rows] for a in arrays]
    return picked[0] if len(picked) == 1 else tuple(picked)


def concatenated(batches):
    """The batches joined into one list of arrays (one per input)."""
    return [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]


def _sample_digests(batches):
    """One digest per sample of `batches`: the bytes of its values in every input."""
    for batch in batches:
        for row in range(len(batch[0])):
            digest = hashlib.blake2b(digest_size=16)
            for array in batch:
                digest.update(np.ascontiguousarray(array[row]).tobytes())
            yield digest.digest()


def samples_in_common(batches, others):
    """How many samples of `others` are, value for value, also samples of `batches`
    (both lists of batches as `input_batches` makes them)."""
    seen = set(_sample_digests(batches))
    return sum(digest in seen for digest in _sample_digests(others))
