"""Layers of third-party Keras 2 libraries ("seeds") in legacy `.h5` files, mapped on load.

People trained models with normalization layers from libraries written for Keras 2 and
saved them as legacy `.h5` files. Such a file names each layer by its bare class name
("SwitchNormalization", "FRN", "bln_layer", ...): Keras 3 does not know the name
("Unknown layer"), or, for "GroupNormalization", takes the layer for its own, which
computes a different function (see below). Each known layer is one mapper here,
registered with `@seed_layer` under the class name it was saved as, together with what
identifies it (config keys, weight names, and which files can hold it). A mapper returns
a built Keras 3 layer — normswap's, Keras's, or one of the `Keras2*` compatibility layers
of `normswap.layers` where no existing layer computes the seed's function — named like
the saved layer, holding the file's trained numbers, and says whether it computes what
the seed's own code computed at inference (`training=False`).

The loader (`loading.py`) uses them for legacy files written by Keras 1/2 only (a file
written by Keras 3 records "normswap>SwitchNormalization" and the like, and is never
touched), and leaves alone any class name the caller passes in `custom_objects`:

1. `find_seed_layers`: the recognized layers of the file's model config, with their
   weights as the file lists them (top-level layers; one inside a nested model is
   refused);
2. `skeleton_config`: the config with each of them replaced by an `Identity`; the model
   built from it gives each seed layer's input shape (`with_input_shapes`), on which
   some mappings depend (the rank, the channel axis);
3. `map_seed_layers`: one mapper call per layer; `mapped_config` and `mapped_weights`
   give the edited config and the new weights of those layers, which the loader writes
   into an in-memory copy of the file before Keras builds the model;
4. `seed_notes`: one `SeedNote` per layer, logged and recorded with the model
   (`load_notes.py`).

GroupNormalization. The Keras 2 layers of titu1994/Keras-Group-Normalization and of
keras-contrib are both saved as "GroupNormalization", with exactly the config keys and
weights of Keras's own GroupNormalization, which Keras 3 therefore loads them as, without
a word. They compute something else: they reshape (N, …, C) row-major to
(N, G, …, C/G) and normalize per slice, so a "group" is a contiguous run of each sample's
memory — for channels-last (N, H, W, C) a band of H/G image rows with all their
channels — and keras-contrib also applies γ/β of other channels (`Keras2GroupNormalization`
documents both). normswap's policy:

- which files: a legacy file whose `keras_version` predates 2.11 (or is missing) holds a
  third-party GroupNormalization, since neither standalone Keras 2.0–2.3 nor tf.keras
  before 2.11 had one (keras-team/keras#9750 sent it to keras-contrib; tf.keras's first
  appeared in 2.11, keras-team/keras-cv#1333). From 2.11 on the name is tf.keras's own
  layer, loaded as Keras's (the same function), unless `group_norm_seed` is given;
- where the seeds' runs are channel groups (channels on axis 1: rank-2 and channels_first
  inputs) or G = 1, they compute group normalization: loaded as
  `keras.layers.GroupNormalization`, exact;
- elsewhere loaded as `Keras2GroupNormalization`, exact, as titu1994's or keras-contrib's
  function. The file cannot tell the two apart. When they agree for the file's weights
  (γ, β equal wherever keras-contrib reads another channel's) either is right; otherwise
  the load is refused in one line naming both, unless the caller picked one with
  `group_norm_seed="titu1994"` or `"keras-contrib"` (`--group-norm-seed`).

The package: `registry.py` (what identifies each seed, `@seed_layer`), `h5_weights.py`
(a layer's weights in the file), `config.py` (steps 1–4 above), `_building.py` and
`mappers.py` (one mapper per seed). Adding a seed: write `map(layer: SeedLayer) -> Mapping`
in mappers.py, building the target with `_built` and filling it (`_assign`, or the
target's own methods), state the formula and what differs in its docstring, and register
it with `@seed_layer(class_name, source=..., keys=..., weights=...)`.
"""

from normswap.saving.seeds import mappers  # noqa: F401 - registers the mappers
from normswap.saving.seeds.config import (
    find_seed_layers,
    map_seed_layers,
    mapped_config,
    mapped_weights,
    seed_notes,
    skeleton_config,
    with_input_shapes,
)
from normswap.saving.seeds.h5_weights import write_layer_weights
from normswap.saving.seeds.registry import (
    GROUP_NORM_SEEDS,
    SeedRefusal,
    check_group_norm_seed,
    registered_seeds,
)

__all__ = ["GROUP_NORM_SEEDS", "SeedRefusal", "check_group_norm_seed", "find_seed_layers",
           "map_seed_layers", "mapped_config", "mapped_weights", "registered_seeds",
           "seed_notes", "skeleton_config", "with_input_shapes", "write_layer_weights"]
