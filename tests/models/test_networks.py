"""The Frankle & Carbin networks: sizes, layers, initialisation and the paper defaults."""
import numpy as np
import pytest

from tf_lth import keras
from tf_lth.models import specs as models
from tf_lth.models import networks
from tf_lth.errors import TfLthError


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv3x3(c_in, c_out):
    return 3 * 3 * c_in * c_out + c_out


# 28x28x1 flattened, then 300, 100, 10
LENET = dense(784, 300) + dense(300, 100) + dense(100, 10)
# 32x32x3: conv 64, 64, pool (16x16x64 = 16,384), fc 256, 256, 10
CONV2 = conv3x3(3, 64) + conv3x3(64, 64) + dense(16 * 16 * 64, 256) + dense(256, 256) + dense(256, 10)
# conv 64, 64, pool, 128, 128, pool (8x8x128 = 8,192), fc 256, 256, 10
CONV4 = (conv3x3(3, 64) + conv3x3(64, 64) + conv3x3(64, 128) + conv3x3(128, 128)
         + dense(8 * 8 * 128, 256) + dense(256, 256) + dense(256, 10))
# conv 64, 64, pool, 128, 128, pool, 256, 256, pool (4x4x256 = 4,096), fc 256, 256, 10
CONV6 = (conv3x3(3, 64) + conv3x3(64, 64) + conv3x3(64, 128) + conv3x3(128, 128)
         + conv3x3(128, 256) + conv3x3(256, 256) + dense(4 * 4 * 256, 256) + dense(256, 256) + dense(256, 10))


def test_hand_counts_match_the_paper():
    assert LENET == 266_610
    assert (CONV2, CONV4, CONV6) == (4_301_642, 2_425_930, 2_262_602)  # paper: 4.3M, 2.4M, 2.26M


@pytest.mark.parametrize("name, count", [("lenet_300_100", LENET), ("conv2", CONV2), ("conv4", CONV4),
                                         ("conv6", CONV6)])
def test_parameter_counts(name, count):
    model = networks.build(name)
    assert model.count_params() == count
    assert model.name == name


@pytest.mark.parametrize("name", ["lenet_300_100", "conv2", "conv4", "conv6"])  # the deep ones: test_deep_models
def test_layers(name):
    model = networks.build(name)
    assert isinstance(model, keras.Model)
    weighted = [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    assert weighted[-1] is model.layers[-1] and weighted[-1].name == "output"
    for layer in weighted:
        assert isinstance(layer.kernel_initializer, keras.initializers.GlorotNormal), layer.name
        expected = keras.activations.linear if layer is weighted[-1] else keras.activations.relu
        assert layer.activation is expected, layer.name
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.kernel_size == (3, 3) and layer.padding == "same" and layer.strides == (1, 1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            assert layer.pool_size == (2, 2)
    convs = [layer for layer in weighted if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == {"lenet_300_100": 0, "conv2": 2, "conv4": 4, "conv6": 6}[name]
    assert [layer.units for layer in weighted if isinstance(layer, keras.layers.Dense)] == (
        [300, 100, 10] if name == "lenet_300_100" else [256, 256, 10])


@pytest.mark.parametrize("name", list(models.MODELS))
def test_forward_pass(name):
    model = networks.build(name)
    x = np.random.default_rng(0).random((2, *model.input_shape[1:]), dtype=np.float32)
    assert model(x).shape == (2, 10)


def test_glorot_normal_scale():
    kernel = networks.build("lenet_300_100").layers[2].get_weights()[0]  # 784 x 300
    assert kernel.shape == (784, 300)
    # Glorot: std sqrt(2 / (fan_in + fan_out)), drawn from a normal truncated at 2 of its own
    # stddevs (widened by 1/0.8796 so that the truncated draw has the Glorot std)
    std = np.sqrt(2 / (784 + 300))
    assert 0.97 < kernel.std() / std < 1.03
    assert np.abs(kernel).max() <= 2 * std / 0.87962566 + 1e-6
    assert abs(kernel.mean()) < 1e-3


def test_conv_models_take_mnist_shapes():
    model = networks.build("conv6", input_shape=(28, 28, 1), num_classes=7)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 7)


def test_paper_defaults():
    lenet = models.MODELS["lenet_300_100"]
    assert (lenet.input_shape, lenet.optimizer, lenet.learning_rate, lenet.batch_size, lenet.epochs) == (
        (28, 28, 1), "adam", 1.2e-3, 60, 10)
    assert dict(lenet.rates) == {"dense": 0.2, "output": 0.1}
    expected = {"conv2": (2e-4, 0.1), "conv4": (3e-4, 0.1), "conv6": (3e-4, 0.15)}
    for name, (lr, conv_rate) in expected.items():
        spec = models.spec(name)
        assert (spec.input_shape, spec.optimizer, spec.batch_size) == ((32, 32, 3), "adam", 60)
        assert spec.learning_rate == lr, name
        assert dict(spec.rates) == {"conv": conv_rate, "dense": 0.2, "output": 0.1}, name
    assert list(models.MODELS) == ["lenet_300_100", "conv2", "conv4", "conv6", "resnet20", "vgg16"]
    for name, k in (("resnet20", 500), ("vgg16", 1000)):  # Frankle et al. 2020's CIFAR-10 recipe
        spec = models.spec(name)
        assert (spec.input_shape, spec.optimizer, spec.learning_rate, spec.momentum, spec.batch_size, spec.epochs) == (
            (32, 32, 3), "sgd", 0.1, 0.9, 128, 160)
        assert (spec.schedule, spec.milestones, spec.weight_decay, spec.augment) == ("step", ("80ep", "120ep"), 1e-4, True)
        assert dict(spec.ticket) == {"scope": "global", "ignore": ("output",), "rewind": f"iteration:{k}"}
        assert "Frankle et al. 2020" in spec.source


def test_unknown_model():
    with pytest.raises(TfLthError, match="unknown model 'resnet' .*lenet_300_100"):
        models.spec("resnet")
    with pytest.raises(TfLthError, match="unknown model"):
        networks.build("resnet")


def test_every_spec_names_a_builder():
    for name, spec in models.MODELS.items():
        assert callable(getattr(networks, spec.builder)), name
