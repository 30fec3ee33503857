"""Where each cell of a network's last feature map looks in the input image.

A feature map of h cells over an input of n pixels is usually drawn as if cell i covered the
pixels around (i + 0.5) * n / h. Convolutions with stride 2 and TensorFlow's "same" padding (or
Keras's explicit ZeroPadding2D((0, 1), (0, 1))) pad only the bottom and right, so every such layer
moves the cells' centres half an input pixel of that layer down and right: after five of them the
cells of MobileNetV2 at 128 px look 15.5 px (12 % of the image) below and right of where the
naive drawing puts them, and a Grad-CAM map drawn the naive way sits up and left of the finding.
This module walks the Keras graph and returns that offset, so that maps are placed where their
cells look (`explain.ensemble_maps`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: layers that slide a window over the image: kernel (or pool) size, stride, padding
_WINDOWED = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D")


@dataclass(frozen=True)
class FeatureGrid:
    """A feature map's cells in input pixels (pixel-centre coordinates: pixel p is at p)."""

    stride: float  # input pixels between neighbouring cells
    first_centre: float  # centre of cell 0's receptive field
    cells: int  # cells along one side
    pixels: int = 0  # the input's side in pixels

    def as_record(self) -> list[float]:
        """[first_centre, stride, pixels]: what `explain.ensemble_maps` places maps with (and
        a bundle stores per member)."""
        return [float(self.first_centre), float(self.stride), int(self.pixels)]

    @property
    def offset(self) -> float:
        """How far, in cells, the cells look beyond the naive placement (cell i at the centre
        of the i-th of `cells` equal strips): positive is down / right."""
        return (self.first_centre - (self.stride - 1) / 2) / self.stride


def _window(config: dict) -> tuple[int, int, str]:
    size = config.get("kernel_size") or config.get("pool_size")
    strides = config.get("strides") or size
    dilation = int((config.get("dilation_rate") or (1,))[0])
    kernel = (int(size[0]) - 1) * dilation + 1
    return kernel, int(strides[0]), config.get("padding", "valid")


def _step(layer, grid: FeatureGrid) -> FeatureGrid:
    """The grid after one layer (layers that do not move pixels keep it)."""
    name = type(layer).__name__
    if name in _WINDOWED:
        kernel, stride, padding = _window(layer.get_config())
        n = grid.cells
        if padding == "same":
            out = -(-n // stride)
            top = max((out - 1) * stride + kernel - n, 0) // 2  # TensorFlow pads the rest below
        else:
            out, top = (n - kernel) // stride + 1, 0
        centre = grid.first_centre + ((kernel - 1) / 2 - top) * grid.stride
        return FeatureGrid(grid.stride * stride, centre, out, grid.pixels)
    if name == "ZeroPadding2D":
        padding = layer.get_config()["padding"]
        top = int(padding[0][0]) if isinstance(padding[0], (list, tuple)) else int(padding[0])
        bottom = int(padding[0][1]) if isinstance(padding[0], (list, tuple)) else int(padding[0])
        return FeatureGrid(grid.stride, grid.first_centre - top * grid.stride, grid.cells + top + bottom,
                           grid.pixels)
    if name == "Cropping2D":
        cropping = layer.get_config()["cropping"]
        top, bottom = int(cropping[0][0]), int(cropping[0][1])
        return FeatureGrid(grid.stride, grid.first_centre + top * grid.stride, grid.cells - top - bottom,
                           grid.pixels)
    return grid


def feature_grid(model, feature) -> FeatureGrid:
    """The grid of `feature` (a tensor of `model`'s graph) over `model`'s single image input.

    Follows the graph in layer order; a layer with several inputs (Add, Concatenate, Multiply)
    takes the grid of its first input whose grid is known (Keras's backbones join only branches
    that are aligned with each other)."""
    image = model.inputs[0]
    grids = {id(image): FeatureGrid(1.0, 0.0, int(image.shape[1]), int(image.shape[1]))}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            known = [grids[id(t)] for t in node.input_tensors if id(t) in grids]
            if not known:
                continue
            grid = _step(layer, known[0])
            for tensor in node.output_tensors:
                if len(tensor.shape) == 4 and tensor.shape[1] is not None:
                    grid = FeatureGrid(grid.stride, grid.first_centre, int(tensor.shape[1]), grid.pixels)
                grids[id(tensor)] = grid
    if id(feature) not in grids:
        raise ValueError("the feature map is not reachable from the model's image input")
    return grids[id(feature)]


def classifier_grid(classifier) -> FeatureGrid:
    """The grid of a classifier's Grad-CAM layer (its explainer's feature output), cached on it."""
    if "feature_grid" not in classifier.graphs:
        grid = feature_grid(classifier.explainer, classifier.explainer.outputs[0])
        classifier.graphs["feature_grid"] = grid
        log.debug("%s at %d px: %d cells, stride %.0f, offset %.3f cells", classifier.arch.name,
                  classifier.input_size, grid.cells, grid.stride, grid.offset)
    return classifier.graphs["feature_grid"]
