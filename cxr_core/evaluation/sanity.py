"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

Model randomisation: a map that explains the model must change when the model's weights are
replaced by random ones. `randomised_classifier` re-initialises a member's weights (all of its
layers, or cascading from the top: the last n layers that hold weights), and
`model_randomisation` compares, per label and image, the trained member's map with the
randomised member's by the Spearman rank correlation (`localisation.map_correlation`): near 0
means the map depends on what the model learnt, near 1 that it would look the same whatever the
weights (an edge detector of the image, not an explanation).

The data-randomisation check (a map that is the same on every X-ray does not depend on the
image) is `localisation.map_sameness`, which `localise` reports per label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..explain.ensemble_maps import explain_arrays
from .localisation import map_correlation

#: Seed of the random weights unless told otherwise.
RANDOM_SEED = 1234


def weight_layers(model) -> list:
    """The model's layers that hold weights, from the top (logits) down to the first one."""
    return [layer for layer in reversed(model.layers) if layer.get_weights()]


def randomised_classifier(classifier, top_layers: int | None = None, seed: int = RANDOM_SEED):
    """A copy of a member (`model_building.Classifier`) whose weights are re-initialised as an
    untrained member of the same architecture would be: all layers (`top_layers=None`), or only
    the `top_layers` layers nearest the output that hold weights (Adebayo et al.'s cascading
    randomisation; the layers below keep the trained weights). The given member is unchanged."""
    import keras

    from ..modeling.model_building import build_classifier, refresh_layer_state

    keras.utils.set_random_seed(int(seed))
    fresh = build_classifier(classifier.arch.name, classifier.labels, classifier.input_size,
                             weights=None, augment=False)
    twin = build_classifier(classifier.arch.name, classifier.labels, classifier.input_size,
                            weights=None, augment=False)
    twin.model.set_weights(classifier.model.get_weights())
    # the two builds have the same layers in the same order (auto-generated names may differ)
    pairs = [(mine, new) for mine, new in zip(reversed(twin.model.layers), reversed(fresh.model.layers))
             if mine.get_weights()]
    count = len(pairs) if top_layers is None else max(0, min(int(top_layers), len(pairs)))
    for mine, new in pairs[:count]:
        mine.set_weights(new.get_weights())
    refresh_layer_state(twin.model)
    return twin


def model_randomisation(classifier, crops: np.ndarray, size: int | None = None,
                        top_layers: int | None = None, seed: int = RANDOM_SEED,
                        flip: bool = False) -> pd.DataFrame:
    """Maps of a trained member and of its randomised copy (`randomised_classifier`) on the same
    crops (N, H, W), brought to size x size as the review does (with `flip`, averaged over the
    mirror as the bundle's test-time flips do). One row per image and label: image, label,
    spearman (NaN when either map is flat, e.g. all zero)."""
    size = int(size or classifier.input_size)
    trained = explain_arrays([classifier], crops, size, flip=flip).mean_maps
    randomised = explain_arrays([randomised_classifier(classifier, top_layers, seed)], crops, size,
                                flip=flip).mean_maps
    rows = [{"image": i, "label": label, "spearman": map_correlation(trained[i, k], randomised[i, k])}
            for i in range(len(crops)) for k, label in enumerate(classifier.labels)]
    return pd.DataFrame(rows, columns=["image", "label", "spearman"])


def randomisation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per label: images, median Spearman correlation and its largest absolute value (flat maps
    left out), from `model_randomisation`'s rows."""
    def summary(values: pd.Series) -> pd.Series:
        finite = values.dropna()
        return pd.Series({"images": int(finite.size),
                          "median_spearman": float(finite.median()) if finite.size else float("nan"),
                          "max_abs_spearman": float(finite.abs().max()) if finite.size else float("nan")})

    labels = list(dict.fromkeys(table["label"]))
    return pd.DataFrame([{"label": label, **summary(table.loc[table["label"] == label, "spearman"])}
                         for label in labels])
