"""Where feature-map cells look: the walked grid matches each cell's receptive field, measured by
back-propagating from the cell, and the shipped recipes' offsets are what the padding implies."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.modeling.feature_geometry import FeatureGrid, feature_grid


def _strided_net(size: int = 64):
    """Input -> explicit (0, 1) padding + valid stride-2 conv -> 'same' stride-2 conv -> 'same'
    stride-1 conv: the padding patterns of Keras's MobileNets and EfficientNets. All-ones
    kernels and no activation, so a cell's gradient covers exactly its receptive field."""
    import keras
    from keras import layers

    ones = keras.initializers.Ones()
    image = keras.Input((size, size, 1))
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(image)
    x = layers.Conv2D(1, 3, strides=2, padding="valid", kernel_initializer=ones, use_bias=False)(x)
    x = layers.Conv2D(1, 3, strides=2, padding="same", kernel_initializer=ones, use_bias=False)(x)
    x = layers.Conv2D(1, 3, strides=1, padding="same", kernel_initializer=ones, use_bias=False)(x)
    return keras.Model(image, x)


def _receptive_centre(model, row: int, col: int) -> tuple[float, float]:
    """Centre of the input pixels that reach one output cell (mid-point of their extent)."""
    import tensorflow as tf

    size = model.inputs[0].shape[1]
    x = tf.Variable(np.random.default_rng(0).random((1, size, size, 1)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        out = model(x)[0, row, col, 0]
    grad = np.abs(tape.gradient(out, x).numpy()[0, :, :, 0])
    rows, cols = np.nonzero(grad > 0)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def test_the_walked_grid_is_where_each_cell_looks():
    model = _strided_net(64)
    grid = feature_grid(model, model.outputs[0])
    assert grid.cells == 16 and grid.stride == 4 and grid.pixels == 64
    for cell in (3, 7, 12):  # interior cells: their receptive fields are not cut by the border
        centre_row, centre_col = _receptive_centre(model, cell, cell)
        assert centre_row == pytest.approx(grid.first_centre + cell * grid.stride)
        assert centre_col == pytest.approx(grid.first_centre + cell * grid.stride)
    # both stride-2 layers pad below only: each moves the cells half of its input pixel down
    assert grid.first_centre == pytest.approx((grid.stride - 1) / 2 + 0.5 * 1 + 0.5 * 2)
    assert grid.offset > 0


def test_the_demo_architectures_look_half_a_cell_below_and_right_of_the_naive_drawing():
    from cxr_core.modeling.feature_geometry import classifier_grid
    from cxr_core.modeling.model_building import build_classifier

    for arch in ("MobileNetV2", "MobileNetV3Small"):
        classifier = build_classifier(arch, ["a", "b"], 128, weights=None, augment=False)
        grid = classifier_grid(classifier)
        assert (grid.cells, grid.stride, grid.pixels) == (4, 32, 128)
        # five stride-2 layers padded below: 0.5 * (1 + 2 + 4 + 8 + 16) = 15.5 px
        assert grid.first_centre == pytest.approx(15.5 + 15.5)
        assert grid.offset == pytest.approx(15.5 / 32)


def test_a_centred_grid_has_no_offset():
    assert FeatureGrid(32.0, 15.5, 4, 128).offset == 0.0
    assert FeatureGrid(32.0, 15.5, 4, 128).as_record() == [15.5, 32.0, 128]
