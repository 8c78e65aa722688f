"""The networks tf-lth knows, as plain Keras models of either flavour (each builder's ``keras``: tf_keras
by default, or Keras 3, with the same layer names and initializers), their recipes in
:mod:`tf_lth.models.specs`, and the user's own (:func:`build`).

Frankle & Carbin's (2019) LeNet and Conv-2/4/6 use Gaussian Glorot initialisation, ReLU, 3x3 "same"
convolutions and 2x2 max-pooling; ResNet-20 and VGG-16 are OpenLTH's CIFAR networks (below). All
end in a Dense layer of logits named ``output`` (train with ``from_logits=True``).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from tf_lth.models import specs as models
from tf_lth.ticket import flavours
from tf_lth.errors import TfLthError

INIT = "glorot_normal"


def keras_of(flavour=None):
    """The Keras module a builder builds with (each builder's ``keras`` argument): the flavour's, for its
    version (``2``, ``3``; ``None``: tf_keras), its name (``"tf_keras"``, ``"keras3"``) or its record, or the
    Keras module given."""
    if flavour is None or isinstance(flavour, (int, str)):
        named = flavours.FLAVOURS.entries.get(str(flavour))
        return (named or flavours.by_version(2 if flavour is None else flavour)).keras
    return flavour.keras if isinstance(flavour, flavours.Flavour) else flavour


def dense_head(x, widths, num_classes, keras=None):
    """Dense ReLU layers ``fc1``, ``fc2``, ... of ``widths``, then the logits layer ``output``."""
    keras = keras_of(keras)
    for i, width in enumerate(widths, 1):
        x = keras.layers.Dense(width, activation="relu", kernel_initializer=INIT, name=f"fc{i}")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=INIT, name="output")(x)


def lenet_300_100(input_shape=(28, 28, 1), num_classes: int = 10, keras=None):
    """LeNet-300-100: fully connected 300-100-10 (266,610 parameters on 28x28 inputs)."""
    keras = keras_of(keras)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, dense_head(x, (300, 100), num_classes, keras), name="lenet_300_100")


def conv_net(name: str, blocks: tuple[int, ...], input_shape, num_classes, keras=None):
    """Blocks of two 3x3 convolutions and a 2x2 max-pool (``blocks``: filters per block), fc 256, 256."""
    keras = keras_of(keras)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, filters in enumerate(blocks, 1):
        for c in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=INIT,
                                    name=f"conv{2 * b - 2 + c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, dense_head(x, (256, 256), num_classes, keras), name=name)


def conv2(input_shape=(32, 32, 3), num_classes: int = 10, keras=None):
    """Conv-2: conv 64, 64, pool; fc 256, 256, 10."""
    return conv_net("conv2", (64,), input_shape, num_classes, keras)


def conv4(input_shape=(32, 32, 3), num_classes: int = 10, keras=None):
    """Conv-4: conv 64, 64, pool, 128, 128, pool; fc 256, 256, 10."""
    return conv_net("conv4", (64, 128), input_shape, num_classes, keras)


def conv6(input_shape=(32, 32, 3), num_classes: int = 10, keras=None):
    """Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, 10."""
    return conv_net("conv6", (64, 128, 256), input_shape, num_classes, keras)


# --- CIFAR ResNet-20 and VGG-16 as in OpenLTH (Frankle et al. 2020) ---------------------------------
#
# The deep networks follow facebookresearch/open_lth (models/cifar_resnet.py, models/cifar_vgg.py and
# its default hparams, model_init="kaiming_normal", batchnorm_init="uniform"), not the Glorot
# recipe above: OpenLTH draws every Conv2d and Linear weight from kaiming_normal_ (He et al. 2015,
# std sqrt(2 / fan_in)), which keeps the variance of activations through ReLU stacks of this depth.
# ``he_normal`` is that variance (Keras truncates at 2 std and rescales so that the variance is still
# 2 / fan_in). BatchNorm gammas are drawn uniform in [0, 1) and betas start at zero ("uniform");
# momentum and epsilon are PyTorch's (running stats updated by 0.1 of the batch's; eps 1e-5).
# Biases start at zero (OpenLTH leaves PyTorch's default uniform draw for the few it has).

HE_INIT = "he_normal"
BN_GAMMA_INIT = {"class_name": "RandomUniform", "config": {"minval": 0.0, "maxval": 1.0}}


def conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str, bias: bool, relu: bool = True,
                 keras=None):
    """``name`` (Conv2D, He normal), ``<name>_bn`` and, with ``relu``, ``<name>_relu``. A stride-2 3x3
    convolution pads one pixel on every side (``<name>_pad``, then "valid"), as PyTorch's
    ``padding=1`` does: Keras' "same" pads only bottom and right there, which would shift the
    sampled grid by a pixel against the 1x1 stride-2 shortcut."""
    keras = keras_of(keras)
    padding = "same"
    if stride > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=bias,
                            kernel_initializer=HE_INIT, name=name)(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer=BN_GAMMA_INIT,
                                        name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def resnet20(input_shape=(32, 32, 3), num_classes: int = 10, keras=None):
    """CIFAR ResNet-20 (He et al. 2016, sec. 4.2) as OpenLTH's ``cifar_resnet_20``: 272,474 trainable
    parameters (270,256 in 19 convolutions, 1,568 BatchNorm gammas and betas, 650 in ``output``),
    and 1,568 BatchNorm moving means and variances.

    A 3x3 conv of 16 (``conv``), then three stages of three basic blocks of 16, 32 and 64 filters
    (``block1`` .. ``block9``); the first block of stages 2 and 3 halves the resolution with
    stride 2. A block is conv-BN-ReLU, conv-BN, plus the shortcut, then ReLU; the shortcut is
    the identity, or a 1x1 stride-2 conv + BN (``block<i>_shortcut``) where the shape changes
    (OpenLTH's projection, not He et al.'s zero-padding option A). Convolutions have no bias (BN
    follows each). Global average pooling, then the logits layer ``output``. He normal
    initialisation, as OpenLTH's kaiming_normal (see the note above :data:`HE_INIT`).
    """
    keras = keras_of(keras)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, 16, 3, 1, "conv", bias=False, keras=keras)
    filters_in, block = 16, 0
    for stage, filters in enumerate((16, 32, 64)):
        for index in range(3):
            block += 1
            name = f"block{block}"
            stride = 2 if stage > 0 and index == 0 else 1
            out = conv_bn_relu(x, filters, 3, stride, f"{name}_conv1", bias=False, keras=keras)
            out = conv_bn_relu(out, filters, 3, 1, f"{name}_conv2", bias=False, relu=False, keras=keras)
            shortcut = x
            if stride > 1 or filters_in != filters:
                shortcut = conv_bn_relu(x, filters, 1, 2, f"{name}_shortcut", bias=False, relu=False, keras=keras)
            x = keras.layers.Add(name=f"{name}_add")([out, shortcut])
            x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
            filters_in = filters
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=HE_INIT, name="output")(x)
    return keras.Model(inputs, outputs, name="resnet20")


VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16(input_shape=(32, 32, 3), num_classes: int = 10, keras=None):
    """CIFAR VGG-16 with BatchNorm as OpenLTH's ``cifar_vgg_16`` (Frankle et al. 2020): 14,728,266
    trainable parameters (14,714,688 in 13 convolutions, 8,448 BatchNorm gammas and betas, 5,130 in
    ``output``), and 8,448 BatchNorm moving means and variances.

    :data:`VGG16_PLAN`: 3x3 "same" convs ``conv1`` .. ``conv13`` (each with its bias, as OpenLTH's
    ``nn.Conv2d`` default, then BN and ReLU) and 2x2 max-pools ``pool1`` .. ``pool4`` ("M"); the
    2x2x512 map of a 32x32 input is averaged (OpenLTH's ``AvgPool2d(2)``: global average pooling
    here, the same on 32x32 and defined on any size), then the 512 -> ``num_classes`` logits layer
    ``output``. He normal initialisation, as OpenLTH's kaiming_normal (see :data:`HE_INIT`).
    """
    keras = keras_of(keras)
    inputs = keras.Input(input_shape, name="image")
    x, conv, pool = inputs, 0, 0
    for spec in VGG16_PLAN:
        if spec == "M":
            pool += 1
            x = keras.layers.MaxPooling2D(2, name=f"pool{pool}")(x)
        else:
            conv += 1
            x = conv_bn_relu(x, spec, 3, 1, f"conv{conv}", bias=True, keras=keras)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=HE_INIT, name="output")(x)
    return keras.Model(inputs, outputs, name="vgg16")


# --- by name: the registered builders, or the user's model ------------------------------------------
def build(name: str, input_shape=None, num_classes: int = 10, keras=None):
    """Build the model ``name`` for ``input_shape`` (its spec's shape when omitted) in the flavour
    ``keras`` (:func:`keras_of`: tf_keras by default, ``3`` for Keras 3): a registered builder, or
    the user's (:func:`tf_lth.models.specs.user_model`): ``module:function`` (its ``input_shape`` and
    ``num_classes`` passed if it takes them) or a saved model file."""
    keras = keras_of(keras)
    spec = models.spec(name)
    kind = models.user_model(name)
    if kind is None:
        return globals()[spec.builder](tuple(input_shape or spec.input_shape), num_classes, keras=keras)
    model = load_user_model(name, keras) if kind == "file" else call_user_function(name, input_shape, num_classes)
    if not isinstance(model, keras.Model):
        if keras.__name__ == "keras":
            raise TfLthError(f"{name} gave a {type(model).__module__}.{type(model).__name__}, not a Keras 3 model "
                             "(--keras 3: build it with `import keras`)")
        hint = " (a Keras 3 model: build it with tf_keras, `from tf_lth import keras`)" if "keras.src" in type(model).__module__ else ""
        raise TfLthError(f"{name} gave a {type(model).__module__}.{type(model).__name__}, not a tf_keras model{hint}")
    if input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
        raise TfLthError(f"{name} takes inputs of shape {tuple(model.input_shape[1:])} but the data has "
                         f"{tuple(input_shape)}: resize the data (--image-size HxW, --channels C) or the model")
    return model


def call_user_function(name: str, input_shape, num_classes: int):
    """``module:function`` (a module on the path or the working folder, or a ``.py`` file) called with
    the ``input_shape`` and ``num_classes`` it takes."""
    module_name, _, function = name.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # the console script's path lacks the working folder
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as e:
        raise TfLthError(f"cannot import {module_name} for --model {name} ({e}): check the module path") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise TfLthError(f"{module_name} has no function {function} (for --model {name})")
    accepted = inspect.signature(builder).parameters
    given = {"input_shape": tuple(input_shape) if input_shape else None, "num_classes": num_classes}
    return builder(**{k: v for k, v in given.items() if k in accepted and v is not None})


def load_user_model(path: str, keras=None):
    """A saved model of the flavour (``.keras``, ``.h5``, a tf_keras SavedModel folder), uncompiled: tf-lth
    compiles it."""
    keras = keras_of(keras)
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as e:
        raise TfLthError(f"cannot load the model {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                         "save it with tf_keras (model.save) or give module:function") from None
