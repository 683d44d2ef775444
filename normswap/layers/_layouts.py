"""Loading files written by an earlier weight layout of a layer.

When a layer's weights change (one added, two merged), files saved before the change
must still load, as the function they were saved as. Keras gives two entry points:

- `.keras` files and `.weights.h5` weights call `layer.load_own_variables(store)`, where
  `store["0"], store["1"], ...` are the saved values in the saving layer's
  `trainable_variables + non_trainable_variables` order;
- legacy `.h5` files compare the saved count with the loading layer's
  `trainable_weights + non_trainable_weights`, refuse any mismatch, assign the values
  in that order and then call `layer.finalize_state()` if the layer has one.

`EarlierLayouts` handles both. A layer that mixes it in says how many values its earlier
layout saved (`earlier_layout_size`) and how to read them (`restore_earlier_values`).
Its `from_config` sets `self.earlier_layout = True` when the config is an earlier one;
`build` then creates the earlier set of variables, so a legacy `.h5` file finds the count
it wrote, and `adopt_current_layout` turns them into the current set once the values are
in. A layer in the current layout also accepts an earlier store (e.g. `load_weights` of
an old `.weights.h5` into a new model): its values are converted on the fly.
"""

import numpy as np
from keras import ops


class EarlierLayouts:
    """Mixin for a Keras layer that loads files written by its earlier weight layout."""

    #: True from `from_config` of an earlier config until the earlier values are loaded.
    earlier_layout = False

    def earlier_layout_size(self):
        """How many values the earlier layout saved for this layer (as configured)."""
        raise NotImplementedError

    def restore_earlier_values(self, values):
        """Set the current weights from the earlier layout's values (NumPy, saved order)."""
        raise NotImplementedError

    def adopt_current_layout(self):
        """Replace the earlier set of variables (built from an earlier config) by the
        current one; the values are set afterwards by `restore_earlier_values`."""
        raise NotImplementedError

    def _own_variables(self):
        # The order Keras saves and loads a layer's own variables in.
        return list(self._trainable_variables) + list(self._non_trainable_variables)

    def load_own_variables(self, store):
        saved = len(store.keys())
        if not self.earlier_layout and saved != len(self._own_variables()) \
                and saved == self.earlier_layout_size():
            self.restore_earlier_values([np.asarray(store[str(i)]) for i in range(saved)])
            return
        super().load_own_variables(store)
        self.finalize_state()

    def finalize_state(self):
        """Called by Keras's legacy .h5 loader once the saved values are assigned (and by
        `load_own_variables`): a layer still in the earlier layout adopts the current one."""
        if not self.earlier_layout:
            return
        values = [ops.convert_to_numpy(v) for v in self._own_variables()]
        self.adopt_current_layout()
        self.earlier_layout = False
        self.restore_earlier_values(values)
