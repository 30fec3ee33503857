"""Render a bundle as a human-readable MODEL_CARD.md (data, licences, labels, metrics)."""

from __future__ import annotations

from pathlib import Path

from ..explain.occlusion import MAP_METHOD_NAMES
from ..modeling.bundle import Bundle
from .shortcut_audit import audit_markdown


#: the split names, in the order the card lists them
_SPLITS = ("train", "val", "test")


def _fmt(value, nested: bool = False) -> str:
    """A manifest value as text: never a raw Python dict or list (a dict inside another is
    put in brackets)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        if not value:
            return "none"
        if _is_split_counts(value):
            text = _per_split(value)
        else:
            text = ", ".join(f"{k}: {_fmt(v, nested=True)}"
                             for k, v in value.items())
        return f"({text})" if nested else text
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, nested=True) for v in value) if value else "none"
    return str(value)


def _is_split_counts(value: dict) -> bool:
    return bool(value) and set(value) <= set(_SPLITS) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())


def _per_split(counts: dict) -> str:
    """{'train': 600, 'val': 90, 'test': 150} -> 'train 600, val 90, test 150'."""
    ordered = [k for k in _SPLITS if k in counts] + [k for k in counts if k not in _SPLITS]
    return ", ".join(f"{k} {counts[k]}" for k in ordered)


def _with_interval(row: dict, key: str) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return _fmt(row.get(key)) + interval


def _by_source_lines(by_source: dict | None) -> list[str]:
    """The test AUC within each source collection (a model can learn the collection)."""
    if not by_source or not by_source.get("rows"):
        return []
    rows = by_source["rows"]
    names = [k[:-len(" AUC")] for k in rows[0] if k.endswith(" AUC")]
    lines = [f"## Test AUC per source ({by_source.get('model', 'CTP')} ensemble)", "",
             "Within one source the collection cannot give the answer away; the last row averages "
             f"the labels with >= {by_source.get('min_test_positives')} test positives and "
             "negatives there (its 'positives' cell counts those labels).", "",
             "| label | " + " | ".join(f"{n} positives | {n} AUC" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for row in rows:
        cells = [f"{_fmt(row.get(f'{n} positives'))} | {_fmt(row.get(f'{n} AUC'))}" for n in names]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return lines + [""]


#: measures of the localisation section, in order, with the names the tables use
_LOCALISATION_MEASURES = {"pointing": "pointing game", "energy_in_box": "energy in box",
                          "iobb_0.1": "found at IoBB >= 0.1", "iobb_0.25": "found at IoBB >= 0.25",
                          "iobb_0.5": "found at IoBB >= 0.5", "lung_share": "energy on lungs"}


def _localisation_lines(entry: dict | None) -> list[str]:
    """Whether the maps point at the findings: `localise`'s overall figures beside its baselines."""
    if not entry or not entry.get("overall"):
        return []
    lines = ["## Localisation against radiologists' boxes", "",
             (f"{entry.get('boxes')} boxes on {entry.get('images')} X-rays of {entry.get('patients')} "
             f"patients (findings: {', '.join(entry.get('findings', []))}); the maps the Review page "
             "shows, measured as computed (never masked). In brackets: 95% patient-level bootstrap "
             f"intervals ({entry.get('resamples')} resamples, seed {entry.get('seed')}). Baselines on "
             "the same boxes: a map uniform over the lung fields, and the bundle's average map (what a "
             "model that ignores the image would show)."), "",
             "| measure | model | uniform over lungs | average map |", "|---|---|---|---|"]
    for key, name in _LOCALISATION_MEASURES.items():
        row = entry["overall"].get(key)
        if row:
            lines.append(f"| {name} | {_with_interval(row, 'model')} | {_fmt(row.get('uniform_lungs'))} | "
                         f"{_fmt(row.get('average_map'))} |")
    energy = entry.get("lung_energy")
    if energy and energy.get("model") is not None:
        lines += ["", (f"Energy on the lungs of the lung findings' maps over these {energy.get('xrays')} "
                       f"X-rays (every lung finding, boxed or not): {_with_interval(energy, 'model')}, "
                       f"against {_fmt(energy.get('uniform_crop'))} for a map uniform over the crop box.")]
    if entry.get("flagged_labels"):
        lines += ["", "Maps nearly the same on every X-ray (they do not follow the image): "
                  + ", ".join(entry["flagged_labels"]) + "."]
    if entry.get("unknown_findings"):
        lines += ["", "Boxed findings not in this bundle's labels (skipped): "
                  + ", ".join(entry["unknown_findings"]) + "."]
    tables = entry.get("tables", {})
    if tables.get("markdown"):
        lines += ["", f"Per finding: `{tables['markdown']}`; best and worst cases: `{tables.get('cases')}`."]
    return lines + [""]


def _audit_lines(audit: dict | None) -> list[str]:
    """Shortcut audit: test AUC within each view, sex, age band and source, with intervals."""
    if not audit or not audit.get("rows"):
        return []
    return ["## Shortcut audit: test AUC within subgroups", "",
            (f"{audit.get('model', 'CTP')} ensemble; in brackets 95% patient-level bootstrap intervals "
             f"({audit.get('resamples')} resamples). Within one view, sex, age band or source the "
             "acquisition cannot give the answer away: an AUC that holds there is read from the "
             "image's finding; one that falls was partly read from the acquisition. Groups with "
             "fewer than 10 positives or negatives show the AUC and the positives, no interval."), "",
            audit_markdown(audit["rows"])]


def _imagenet_origin(bundle: Bundle) -> str | None:
    """'Keras Applications <arch> alpha <a>' for the members trained from ImageNet weights (the
    card must say where the starting weights came from), or None when none was."""
    from ..modeling.registry import get_arch

    runs = bundle.training.get("members") or []
    names = []
    for run in runs:
        if (run.get("config") or {}).get("weights") != "imagenet":
            continue
        alpha = dict(get_arch(run["arch"]).kwargs).get("alpha")
        names.append(f"{run['arch']}" + (f" alpha {alpha}" if alpha is not None else ""))
    return f"Keras Applications {', '.join(names)}" if names else None


def render_model_card(bundle: Bundle) -> str:
    """Markdown text of the model card for one bundle."""
    data = bundle.data_summary
    metrics = bundle.metrics
    lines = [f"# Model card: {bundle.bundle_id}", ""]
    imagenet = _imagenet_origin(bundle)
    if bundle.is_demo:
        start = (f"Fine-tuned from ImageNet weights ({imagenet}, Apache-2.0)" if imagenet
                 else "Trained from scratch")
        lines += [f"**Demonstration model: not for clinical use.** {start} on CPU on about "
                  "a thousand public X-rays; it shows how the tool works, not what a PadChest-scale "
                  "model achieves.", ""]
    members = ", ".join(f"{m['arch']} ({m['input_size']} px)" for m in bundle.members)
    chosen_on = bundle.threshold_split() or "the validation split"
    lines += [f"- Label set: `{bundle.label_set}`; {len(bundle.labels)} findings",
              f"- Members: {members}"
              + (f"; initialised from ImageNet ({imagenet}, Apache-2.0)" if imagenet else ""),
              f"- Thresholds: `{bundle.threshold_method}` per label, chosen on {chosen_on}",
              f"- Preprocessing: {_fmt(bundle.preprocessing)}"]
    if bundle.calibrations:
        lines.append(f"- Post-hoc calibration fitted on validation: {', '.join(bundle.calibrations)}")
    if bundle.revision:
        rev = bundle.revision
        lines.append(f"- Revision of `{rev.get('members_from')}`: {rev.get('change')}")
    flips = bundle.inference
    if flips:
        lines.append(f"- Test-time left-right flips: {'on' if flips.get('tta_flip') else 'off'} (validation "
                     f"macro AUC {flips.get('val_auc_plain')} without, {flips.get('val_auc_flip')} with)")
    method = bundle.map_method
    chosen_on = bundle.inference.get("map_method_chosen_on")
    lines.append(f"- Heatmaps: {MAP_METHOD_NAMES[method]}"
                 + (f", chosen on {chosen_on}" if chosen_on else ""))
    lines.append("")
    if data:
        lines += ["## Data", ""]
        for key in ("source", "images", "views", "patients_per_split", "images_per_split",
                    "label_rule", "worst_share_deviation"):
            if key in data:
                lines.append(f"- {key.replace('_', ' ')}: {_fmt(data[key])}")
        for source, info in (data.get("per_source") or {}).items():
            split = info.get("images_per_split")
            lines.append(f"- {source}: {info.get('images')} images of {info.get('patients')} patients"
                         + (f"; per split: {_fmt(split)}" if split else ""))
        if data.get("labels_not_kept"):
            lines.append(f"- labels not kept (positives): {_fmt(data['labels_not_kept'])}")
        if data.get("licences"):
            lines += ["", "Image licences (as stated by the source, per image):", "",
                      "| licence | images |", "|---|---|"]
            lines += [f"| {k.strip() or 'empty'} | {v} |" for k, v in data["licences"].items()]
        lines.append("")
    if data.get("labels"):
        unknown = data.get("unknown_labels") or {}  # images whose source does not annotate the label
        note = ("; unknown: images whose source does not annotate the finding (left out of its "
                "loss and metrics)." if unknown else ".")
        lines += ["## Label counts", "", f"Positives per split{note}", "",
            "| label | group | train | val | test |" + (" unknown (train / val / test) |" if unknown else ""),
            "|---|---|---|---|---|" + ("---|" if unknown else "")]
        groups = {name: ", ".join(g) for name, g in bundle.groups.items()}
        for label, counts in data["labels"].items():
            row = (f"| {label} | {groups.get(label, label)} | {counts.get('train')} | "
                   f"{counts.get('val')} | {counts.get('test')} |")
            if unknown:
                u = unknown.get(label, {})
                row += f" {u.get('train', 0)} / {u.get('val', 0)} / {u.get('test', 0)} |"
            lines.append(row)
        lines.append("")
    if metrics.get("overall"):
        lines += [f"## Test metrics ({metrics.get('images')} images)", "",
                  "| model | AUC (macro) | F1 macro (both classes) | F1 positive | Hamming loss |",
                  "|---|---|---|---|---|"]
        for name, row in metrics["overall"].items():
            lines.append(f"| {name} | {_with_interval(row, 'auc_macro')} | {_with_interval(row, 'f1_macro')} | "
                         f"{_fmt(row.get('f1_positive_macro'))} | {_fmt(row.get('hamming_loss'))} |")
        r = metrics.get("intervals")
        if r:
            lines += ["", f"In brackets: 95% patient-level bootstrap intervals ({r['resamples']} resamples "
                          f"of {r['units']} {r['unit']}s, seed {r['seed']}); labels with fewer than "
                          f"{r['min_class_count']} positives or negatives have none."]
        ctp = metrics.get("per_label", {}).get("CTP", [])
        if ctp:
            lines += ["", "Per label (CTP ensemble):", "",
                      "| label | test positives | AUC | F1 macro | F1 positive | note |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['label']} | {r['positives']} | {_with_interval(r, 'auc')} | "
                      f"{_with_interval(r, 'f1_macro')} | {_fmt(r['f1_positive'])} | "
                      f"{'; '.join(n for n in (r.get('note'), r.get('ci_note')) if n)} |" for r in ctp]
        lines.append("")
    lines += _by_source_lines(metrics.get("by_source"))
    lines += _localisation_lines(metrics.get("localisation"))
    lines += _audit_lines(metrics.get("shortcut_audit"))
    if bundle.lineage:
        lineage = {k: v for k, v in bundle.lineage.items() if k not in ("before", "after")}
        parent = lineage.pop("parent_bundle_id", None)
        chain = f"`{parent}` → `{bundle.bundle_id}`" if parent else f"`{bundle.bundle_id}`"
        lines += ["## Lineage", "", chain, ""]
        lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in lineage.items()]
        lines.append("")
    return "\n".join(lines)


def write_model_card(bundle_dir) -> Path:
    """Write MODEL_CARD.md into a bundle (a folder or a `Bundle`) and refresh its checksums."""
    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.load(bundle_dir)
    path = bundle.path / "MODEL_CARD.md"
    path.write_text(render_model_card(bundle))
    bundle.save()
    return path
