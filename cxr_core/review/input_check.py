"""Is this a frontal chest X-ray? The check that runs before any finding is shown.

Three checks, in this order, each giving one sentence naming the real reason when it refuses
(`refused_by` names the rule: dicom, size, colour, shape, edges, lungs, score):
1. the DICOM header, when it has them: BodyPartExamined must name the chest, ViewPosition must
   not be lateral or oblique, Modality must be a radiograph;
2. the image's size (at least MIN_READABLE_SIDE pixels on its shorter side: a 64 x 64 thumbnail
   is too small to read, whatever its edges), its colour (`image_io.colour_spread` at most
   MAX_COLOUR_SPREAD: a colour photograph is not a grayscale X-ray; a tinted X-ray passes), its
   shape (a frontal chest film is close to square: width / height within
   0.6-1.7; all 1,323 real X-rays of the shared data but one two-panel figure are), its edges
   (`edge_strength` at least 0.18: bones and the body outline; the real X-rays are all >= 0.23,
   smooth generated fields <= 0.16) and the lung segmentation (`imaging.lung_geometry`): it
   must have found two lung fields side by side;
3. the out-of-distribution score of the bundle's stored statistics (`modeling.input_model`) must
   not exceed its threshold. Bundles without them get checks 1 and 2 only (logged once). The
   score is not in the sentence (it means little to a reader); `InputCheck.details` gives it.
A refused image still gets its findings computed: the app and the CLI hide them unless an expert
asks to see them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging.image_io import LoadedImage
from ..imaging.input_descriptor import describe_input, edge_strength
from ..imaging.lung_geometry import geometry_problem, measure_lungs
from ..imaging.preprocessing import Preprocessed
from ..modeling.input_model import METHOD, InputModel

CHEST_WORDS = ("CHEST", "THORAX", "TORAX", "TÓRAX", "LUNG", "PULM")
UNINFORMATIVE = {"UNKNOWN", "OTHER", "NONE", "-", "NA", "N/A"}
LATERAL_VIEWS = {"LL", "RL", "LLD", "RLD", "LLO", "RLO", "LAT", "LATERAL", "LLAT", "RLAT"}
NOT_RADIOGRAPHS = {"CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
                   "NM": "nuclear medicine", "PT": "PET", "MG": "mammography", "XA": "angiography",
                   "RF": "fluoroscopy", "IO": "intra-oral radiography", "PX": "panoramic dental",
                   "OP": "ophthalmic photography", "OPT": "ophthalmic tomography",
                   "ES": "endoscopy", "SM": "slide microscopy", "XC": "external camera photography",
                   "ECG": "electrocardiography", "BMD": "bone densitometry"}


@dataclass(frozen=True)
class InputCheck:
    """The verdict on one image: passed or why not, and the out-of-distribution score."""

    passed: bool
    reason: str  # one sentence when refused, "" when passed
    score: float | None  # out-of-distribution score; None without stored statistics
    threshold: float | None
    checks: tuple[str, ...]  # the checks that ran: "dicom", "lungs", "score"
    refused_by: str = ""  # the rule that refused (module docstring); "" if passed

    def record(self) -> dict:
        """Plain-JSON form, stored with the review's model output."""
        return {"passed": self.passed, "reason": self.reason, "refused_by": self.refused_by,
                "score": None if self.score is None else round(self.score, 4),
                "threshold": None if self.threshold is None else round(self.threshold, 4),
                "checks": list(self.checks), "method": METHOD if self.score is not None else None}

    def details(self) -> str:
        """The check's numbers in one line, for a 'details' view (never the main sentence)."""
        rule = f"refused by the {self.refused_by} rule" if self.refused_by else "passed"
        checks = ", ".join(self.checks)
        if self.score is None:
            return f"Input check {rule} (checks run: {checks}; no distance score for this model)."
        return (f"Input check {rule} (checks run: {checks}); distance score {self.score:.2f}, "
                f"images scoring above {self.threshold:.2f} are refused.")


def dicom_problem(image: LoadedImage) -> str:
    """One sentence when the DICOM header says this is not a frontal chest radiograph, else ''."""
    part, view, modality = image.body_part, image.view_position, image.modality
    if modality and modality in NOT_RADIOGRAPHS:
        return (f"The DICOM header says this is {NOT_RADIOGRAPHS[modality]} ({modality}), "
                f"not a chest radiograph.")
    if part and part not in UNINFORMATIVE and not any(word in part for word in CHEST_WORDS):
        return f"The DICOM header says the body part is {part}, not the chest."
    if view and view in LATERAL_VIEWS:
        return f"The DICOM header says the view is {view} (lateral or oblique); the models read frontal views."
    return ""


@dataclass(frozen=True)
class InputFacts:
    """What the check needs from one image, before any bundle statistics are applied."""

    dicom: bool  # whether a DICOM header was read
    reason: str  # the DICOM, shape, edge or lung-geometry refusal, '' when none refuses
    descriptor: np.ndarray  # `describe_input` of the working image and its lung mask
    refused_by: str = ""  # which of those rules refused ("dicom", "size", "colour", "shape", ...)


#: width / height of a frontal chest film (half an X-ray is 2.0 or 0.5)
ASPECT_RANGE = (0.6, 1.7)
#: the shorter side below which an image is too small to read (the loader refuses under 32 px)
MIN_READABLE_SIDE = 128
#: largest `colour_spread` of a grayscale X-ray: tinted X-rays (a colour map of the grey
#: levels, annotations in colour) measure 1-6, colour photographs and rainbow maps 30 or more
MAX_COLOUR_SPREAD = 12.0


def size_problem(image: LoadedImage) -> str:
    """One sentence when the image is too small to read, or ''."""
    height, width = image.original_size
    if min(height, width) < MIN_READABLE_SIDE:
        return (f"The image is only {width} x {height} pixels: too small to read (a chest X-ray "
                f"needs at least {MIN_READABLE_SIDE} pixels on its shorter side).")
    return ""


def colour_problem(image: LoadedImage) -> str:
    """One sentence when the image is a colour picture rather than a grayscale X-ray, or ''."""
    if image.colour_spread > MAX_COLOUR_SPREAD:
        return ("The image is in colour (a photograph or a colour picture), not a grayscale "
                "X-ray.")
    return ""


def shape_problem(image: LoadedImage) -> str:
    """One sentence when the image is too wide or too tall for a frontal chest film, or ''."""
    height, width = image.original_size
    aspect = width / max(height, 1)
    if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
        return (f"The image is {aspect:.2f} times as wide as it is tall; a frontal chest X-ray is "
                f"close to square (a cropped part or a panel of several images is not reviewed).")
    return ""


#: lowest `edge_strength` of a radiograph (module docstring, check 2)
MIN_EDGE_STRENGTH = 0.18


def edge_problem(pre: Preprocessed) -> str:
    """One sentence when the whole image (512 px) is too smooth to be a radiograph, or ''."""
    strength = edge_strength(pre.image)
    if strength < MIN_EDGE_STRENGTH:
        return (f"The image has almost no sharp edges (edge strength {strength:.2f}, below "
                f"{MIN_EDGE_STRENGTH:.2f}); a chest X-ray shows the edges of bones and of the body.")
    return ""


def input_facts(image: LoadedImage, pre: Preprocessed) -> InputFacts:
    """Checks 1 and 2 of the module docstring and the descriptor for check 3."""
    geometry = measure_lungs(pre.mask.lungs)
    rules = (("dicom", lambda: dicom_problem(image)), ("size", lambda: size_problem(image)),
             ("colour", lambda: colour_problem(image)), ("shape", lambda: shape_problem(image)),
             ("edges", lambda: edge_problem(pre)), ("lungs", lambda: geometry_problem(pre.mask, geometry)))
    refused_by, reason = "", ""
    for name, problem in rules:  # the first rule that refuses gives the one reason shown
        reason = problem()
        if reason:
            refused_by = name
            break
    return InputFacts(image.source_format == "dicom", reason,
                      describe_input(pre.image, pre.mask, geometry), refused_by)


def check_input(image: LoadedImage, pre: Preprocessed, model: InputModel | None) -> InputCheck:
    """Run the checks of the module docstring on a decoded and preprocessed image."""
    return decide(input_facts(image, pre), model)


def decide(facts: InputFacts, model: InputModel | None) -> InputCheck:
    """The verdict from an image's facts and the bundle's statistics (None: checks 1-2 only)."""
    checks = (["dicom"] if facts.dicom else []) + ["lungs"]
    reason, refused_by, score, threshold = facts.reason, facts.refused_by, None, None
    if model is not None:
        checks.append("score")
        score = float(model.scores(facts.descriptor[None])[0])
        threshold = model.threshold
        if not reason and score > threshold:
            reason, refused_by = ("The image is unlike the frontal chest X-rays the models were "
                                  "trained on."), "score"
    return InputCheck(not reason, reason, score, threshold, tuple(checks), refused_by)

