"""What the loader changed on the way in, kept beside each model it returned.

`load_model` maps some layers of a legacy file onto other classes (`seeds/`). Each such
layer gets a `SeedNote`: where the layer came from, what it became, and whether the
loaded layer computes what the original did at inference. The loader logs each one
(logger "normswap") and records them here, keyed weakly by the model, so that whoever
holds the model (`normswap inspect`, a conversion report) can show them:

    model = normswap.load_model("old.h5")
    for note in normswap.saving.load_notes(model):
        print(note)               # one line
        note.to_dict()            # machine-readable
"""

import dataclasses
import weakref

_NOTES = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class SeedNote:
    """One layer of a legacy file loaded as another class.

    Attributes:
        layer: the layer's name (the same in the file and in the model).
        saved_as: the class name the file recorded ("SwitchNormalization", "bln_layer").
        source: the library that wrote it ("titu1994/keras-switchnorm").
        loaded_as: the registered name of the class it was loaded as
            ("normswap>SwitchNormalization", "GroupNormalization").
        exact: True when the loaded layer computes what the original code computed at
            inference (`training=False`), to float32 round-off; False when it does not,
            `detail` saying what changed.
        detail: what differs from the original layer or from the plain mapping, or "".
    """

    layer: str
    saved_as: str
    source: str
    loaded_as: str
    exact: bool
    detail: str = ""

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        verdict = "exact" if self.exact else "CHANGED"
        package, _, name = self.loaded_as.rpartition(">")
        text = (f"layer '{self.layer}' ({self.saved_as} of {self.source}) loaded as "
                f"{package or 'keras'}.layers.{name} [{verdict}]")
        return f"{text}: {self.detail}" if self.detail else text


def record_load_notes(model, notes):
    """Keep `notes` (SeedNotes) for `model`, replacing any recorded before."""
    _NOTES[model] = tuple(notes)


def load_notes(model):
    """The SeedNotes `load_model` recorded for `model` (a tuple, empty if none)."""
    try:
        return _NOTES.get(model, ())
    except TypeError:  # not weak-referenceable: nothing was recorded for it
        return ()
