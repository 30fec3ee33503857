"""Plain words for the terms the pages print (CTP, PTC, Hamming loss, ECE, threshold methods):
one line each, shown as a tooltip or caption where the term appears, so a reader who is not a
machine-learning person can read the numbers."""

from __future__ import annotations

TERMS = {
    "CTP": "CTP ('combine then predict'): the models' probabilities are averaged, then each "
           "label's threshold decides.",
    "PTC": "PTC ('predict then combine'): each model decides with its own threshold, then the "
           "models vote; it has no probability of its own.",
    "Hamming loss": "Hamming loss: the share of all image-by-label decisions that are wrong "
                    "(0 is perfect).",
    "ECE": "ECE (expected calibration error): how far the stated probabilities are from how often "
           "the finding is really there, averaged over images (0 is perfectly calibrated).",
    "Brier": "Brier score: the mean squared error of the probability against the truth (lower is better).",
}

THRESHOLD_METHODS = {
    "f1": "each label's threshold maximises its F1 score (the balance of precision and recall) "
          "on the split it was chosen on",
    "youden": "each label's threshold maximises sensitivity + specificity - 1 (Youden's J) on "
              "the split it was chosen on",
    "fixed": "every label's threshold is 0.5",
}


def explain(term: str) -> str:
    """The one-line explanation of `term` (a key of TERMS)."""
    return TERMS[term]


def threshold_words(method: str) -> str:
    """'thresholds: f1' in plain words: how that threshold method chose each label's cut-off."""
    base, _, calibration = str(method).lower().partition("+")
    rule = THRESHOLD_METHODS.get(base)
    if rule is None:
        return f"thresholds '{method}': a threshold set stored in the bundle (saved from the Metrics page)"
    if calibration:
        rule += f", on {calibration}-calibrated probabilities"
    return f"thresholds '{method}': {rule}"
