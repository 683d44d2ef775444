"""The fixers: one function per Keras 2 convention Keras 3 rejects or misreads (see __init__)."""


from normswap.saving.legacy import legacy_fix


def _drop_neutral(obj, class_names, key, neutral):
    """Remove `config[key]` from objects of `class_names` when it holds the `neutral` value."""
    config = obj["config"]
    if obj["class_name"] in class_names and key in config and config[key] == neutral:
        del config[key]
        return True
    return False


# Keras 2 subclassed these from Conv and recorded Conv's `groups`; Keras 3's take no `groups`.
_CONV_WITHOUT_GROUPS = frozenset({
    "DepthwiseConv1D", "DepthwiseConv2D",
    "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "Convolution2DTranspose", "Convolution3DTranspose",
})


@legacy_fix(
    name="conv-groups",
    error=r"Unrecognized keyword arguments passed to \w+: \{[^}]*'groups'",
)
def drop_conv_groups(obj):
    """Drop `groups: 1` from depthwise, separable and transposed convolutions.

    Fixes: ValueError: Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}
    (tf.keras 2.3+ wrote Conv's `groups` into these layers' configs; with groups=1 it meant
    an ordinary convolution, which is what the Keras 3 layers compute without the argument.)
    """
    return _drop_neutral(obj, _CONV_WITHOUT_GROUPS, "groups", 1)


_RECURRENT = frozenset({"SimpleRNN", "GRU", "LSTM", "RNN", "ConvLSTM1D", "ConvLSTM2D",
                        "ConvLSTM3D"})


@legacy_fix(
    name="rnn-time-major",
    error=r"Unrecognized keyword arguments passed to \w+: \{[^}]*'time_major'",
)
def drop_rnn_time_major(obj):
    """Drop `time_major: False` from recurrent layers.

    Fixes: ValueError: Unrecognized keyword arguments passed to GRU: {'time_major': False}
    (Keras 3 removed the option; False, the batch-major layout, is what Keras 3 always uses.)
    """
    return _drop_neutral(obj, _RECURRENT, "time_major", False)


_BATCH_NORMS = frozenset({"BatchNormalization", "SyncBatchNormalization"})


@legacy_fix(
    name="bn-axis-list",
    error=r"class '\w*BatchNormalization' using config=\{[^\n]*'axis': \[",
)
def unlist_batchnorm_axis(obj):
    """Write a BatchNormalization's one-element `axis: [3]` as the integer 3.

    Fixes: TypeError: Error when deserializing class 'BatchNormalization' using config={'name': 'bn', 'axis': [3]}. Exception encountered: int() argument must be a string, a bytes-like object or a real number, not 'list'
    (Keras 2's BatchNormalization records its axis as a list once built. Keras 3 turns the
    list into an int for layers in the old format, but tf.keras 2.13+ writes the layers of
    a Functional model nested in a Sequential in the newer format (with a "module" key),
    which Keras 3 reads without that conversion.)
    """  # noqa: E501 - the error as Keras prints it
    config = obj["config"]
    axis = config.get("axis")
    if obj["class_name"] in _BATCH_NORMS and isinstance(axis, list) and len(axis) == 1:
        config["axis"] = int(axis[0])
        return True
    return False


@legacy_fix(
    name="dtype-policy",
    error=r"'str' object has no attribute 'quantization_mode'",
)
def rename_dtype_policy(obj):
    """Write a layer's Keras 2 mixed-precision `Policy` as the Keras 3 `DTypePolicy` of the
    same name.

    Fixes: AttributeError: 'str' object has no attribute 'quantization_mode'
    (tf.keras records each layer's dtype policy as {"class_name": "Policy", "config":
    {"name": "mixed_float16"}}. Keras 3 does not know the class name `Policy`: its
    deserializer returns the string "Policy" instead of a policy and the layer fails. The
    name alone defines the policy, its compute and variable dtypes, in both versions.)
    """
    policy = obj["config"].get("dtype")
    if (isinstance(policy, dict) and policy.get("class_name") == "Policy"
            and policy.get("module") in (None, "keras.mixed_precision")
            and isinstance(policy.get("config"), dict) and set(policy["config"]) == {"name"}
            and isinstance(policy["config"]["name"], str)):
        policy.update(module="keras", class_name="DTypePolicy", registered_name=None)
        return True
    return False


def _is_reference(value):
    """Whether `value` is a Keras 2 tensor reference: [layer name, node index, tensor index]
    (and call kwargs)."""
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int))


def _references(node):
    """Every tensor reference in a nested structure of lists and dicts, as the lists
    themselves (so that they can be edited in place)."""
    if _is_reference(node):
        yield node
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _references(value)


def _inbound_references(layers):
    """The tensor references of every Keras 2 node (a list; Keras 3 writes a dict) of
    `layers`, a Functional config's layer list."""
    for entry in layers:
        for node in entry.get("inbound_nodes") or []:
            if isinstance(node, list):
                yield from (ref for ref in node if _is_reference(ref))


def _entry_name(entry):
    return entry.get("name") or entry["config"].get("name")


def _first_call_node(entry, inbound, outputs):
    """The node index Keras 2 gave the first call of the model `entry` (1 if it counted
    the model's own construction as node 0, else 0), found from the indices themselves:
    every kept call is referenced, so the highest reference is the first index plus the
    number of calls, minus 1."""
    calls = len(entry.get("inbound_nodes") or [])
    indices = [ref[1] for ref in inbound + outputs if ref[0] == _entry_name(entry)]
    if not calls or not indices:
        return 0
    return max(indices) + 1 - calls


@legacy_fix(
    name="nested-node-index",
    error=r"The following nodes failed to be resolved",
)
def renumber_nested_model_calls(obj):
    """Number the calls of a model nested in a Functional model from 0, as Keras 3 does.

    Fixes: ValueError: Invalid Functional model configuration. The graph of the Functional model either has loops or disconnected nodes. The following nodes failed to be resolved: {<GlobalAveragePooling2D name=pool>: [[['inner', 1, 0, {}]]]}
    (Keras 2 gave a model built on Input tensors a node of its own construction, node 0,
    so its first call in the outer model is node 1 in the file; Keras 3 creates no such
    node and waits for a node 1 that never comes. References from the outer model's
    `output_layers` keep Keras 2's numbering for a Functional model, which Keras 3 reads
    there from 1, and are renumbered for a Sequential one.)
    """  # noqa: E501 - the error as Keras prints it
    config = obj["config"]
    layers = config.get("layers")
    if not isinstance(layers, list) or "output_layers" not in config:
        return False
    inbound = list(_inbound_references(layers))
    outputs = list(_references(config["output_layers"]))
    changed = False
    for entry in layers:
        if not isinstance(entry.get("config"), dict) or "layers" not in entry["config"]:
            continue  # not a model
        if _first_call_node(entry, inbound, outputs) != 1:
            continue
        # Keras 3 reads a Functional model's node in output_layers from 1, as Keras 2 did.
        renumbered = inbound + (outputs if entry["class_name"] == "Sequential" else [])
        for ref in renumbered:
            if ref[0] == _entry_name(entry):
                ref[1] -= 1
                changed = True
    return changed


def _single(references):
    """`[[name, node, tensor]]` → `[name, node, tensor]`; anything else as it is."""
    if isinstance(references, list) and len(references) == 1 and _is_reference(references[0]):
        return references[0]
    return references


@legacy_fix(name="nested-single-io", error=None)
def unwrap_nested_single_io(obj):
    """Give the models nested in a model one input and one output tensor, not lists of one.

    Fixes: ValueError: Layer "dense_1" expects 1 input(s), but it received 2 input tensors
    (Keras 2 wrote a model's only input and output as lists of one, [["out_relu", 0, 0]],
    and read them back as single tensors; Keras 3 keeps the list, so a nested model
    called by a Sequential hands a list of one tensor to the next layer, which then fails
    in ways that depend on that layer. Keyed on the config: the error names a symptom.
    The outermost model is left as it is.)
    """
    layers = obj["config"].get("layers")
    if not isinstance(layers, list):
        return False
    changed = False
    for entry in layers:
        config = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(config, dict):
            continue
        for key in ("input_layers", "output_layers"):
            if key in config and _single(config[key]) is not config[key]:
                config[key] = _single(config[key])
                changed = True
    return changed


@legacy_fix(name="sequential-input-shape", error=None, before_load=True)
def add_sequential_input_layer(obj):
    """Give a Sequential model whose first layer records `batch_input_shape` an InputLayer.

    Fixes: ValueError: Kernel shape must have the same length as input, but received kernel of shape (3, 3, 3, 4) and input of shape (None, None, 8, 8, 3).
    (Keras 2.0-2.3 wrote a Sequential model's input shape only as its first layer's
    `batch_input_shape`, batch axis included. Keras 3.15 passes it to the layer as
    `input_shape`, which it reads without the batch axis, and builds the model for inputs
    of one more dimension: a convolution fails as above; a Dense layer loads without a
    word and the model then refuses its own inputs. An InputLayer of that batch shape
    first, which later tf.keras versions wrote themselves, means what Keras 2 meant.
    Keyed on the config and applied before loading: there may be no error at all.)
    """  # noqa: E501 - the error as Keras prints it
    config = obj["config"]
    layers = config.get("layers")
    if obj["class_name"] != "Sequential" or not isinstance(layers, list) or not layers:
        return False
    first = layers[0]
    first_config = first.get("config") if isinstance(first, dict) else None
    if (first.get("class_name") == "InputLayer" or not isinstance(first_config, dict)
            or "batch_input_shape" not in first_config):
        return False
    dtype = first_config.get("dtype")
    layers.insert(0, {"class_name": "InputLayer", "config": {
        "batch_input_shape": first_config.pop("batch_input_shape"),
        "dtype": dtype if isinstance(dtype, str) else "float32",
        "sparse": False,
        "name": f"{first_config.get('name', 'sequential')}_input",
    }})
    return True
