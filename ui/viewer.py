"""The X-ray viewer (UI only): a Plotly image with zoom and pan, window/level with presets
(lung, mediastinum, bone) and invert, the heatmap of the chosen finding toggled over it (with the
page's own opacity and cut-off: one overlay path), the lung outline, a distance measurement (mm
with the DICOM's pixel spacing, pixels otherwise), and a findings table whose rows pick the map.
A very large image is shown downsampled first; full resolution on request.
One call: `show_viewer(review, key=...)`; everything shown comes from the `Review`.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cxr_core.explain.overlay import (
    ADDED_AREA_COLOR,
    ADDED_AREA_NAME,
    BOX_COLOR,
    DEFAULT_ALPHA,
    DEFAULT_CUTOFF,
    FALLBACK_BOX_COLOR,
    LUNG_COLOR,
    outline_contours,
    overlay,
)
from ui.common import fallback_warning

#: images whose longer side exceeds this are shown downsampled (the browser then stays fluid);
#: detector images up to 4096 px are shown pixel for pixel
MAX_VIEW_SIDE = 4096
#: an image longer than this is first shown at this size (fast), full resolution on request
FIRST_VIEW_SIDE = 2048
#: window presets (centre, width) in the units of the image's [0, 1] range, for a frontal chest
#: film shown dark-lung (MONOCHROME2): the lungs are the dark half, bone the bright end
PRESETS = {"lung": (0.35, 0.7), "mediastinum": (0.6, 0.45), "bone": (0.75, 0.5)}
MIN_WIDTH = 0.02  # narrowest window, in units of the image's [0, 1] range
PLOT_CONFIG = {"scrollZoom": True, "displaylogo": False, "displayModeBar": True,
               "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
               "toImageButtonOptions": {"format": "png", "filename": "cxr_view"}}


def default_window(review) -> tuple[float, float]:
    """(centre, width) the viewer starts from: a DICOM's own VOI window, else the whole range."""
    window = getattr(review.image, "window", None)
    return (float(window[0]), float(window[1])) if window else (0.5, 1.0)


def apply_window(pixels: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Window/level: values centre - width/2 .. centre + width/2 stretched to 0 .. 1, clipped."""
    width = max(float(width), MIN_WIDTH)
    return np.clip((pixels - (centre - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _view_scale(shape: tuple[int, int], max_side: int = MAX_VIEW_SIDE) -> float:
    return min(1.0, max_side / max(shape))


def pixel_spacing(review) -> tuple[float, float] | None:
    """(row, column) spacing in mm from the DICOM (PixelSpacing or ImagerPixelSpacing), or None."""
    study = getattr(review.image, "patient_study", None)
    spacing = getattr(study, "pixel_spacing", None) if study is not None else None
    return (float(spacing[0]), float(spacing[1])) if spacing else None


def measure(review, x: tuple[float, float], y: tuple[float, float]) -> str:
    """The distance from corner to corner of a box drawn on the viewer (original pixels), in mm
    when the DICOM gives the pixel spacing, else in pixels, saying so."""
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    spacing = pixel_spacing(review)
    if spacing is None:
        return (f"Distance: {np.hypot(dx, dy):.0f} pixels (this image has no pixel spacing, "
                "so no length in mm)")
    mm = float(np.hypot(dx * spacing[1], dy * spacing[0]))
    return f"Distance: {mm:.1f} mm ({np.hypot(dx, dy):.0f} pixels at {spacing[0]:.3f} x {spacing[1]:.3f} mm)"


def _png_uri(rgb: np.ndarray) -> str:
    _, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast; the image is lossless anyway
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _outline_traces(review) -> list[go.Scatter]:
    """The lungs (cyan), the area added below them (magenta) and the crop box (yellow; red when
    segmentation fell back), as on the Review page's picture and in the report
    (`overlay.outline_contours`), drawn as vector lines in the original image's coordinates."""
    height, width = review.image.original_size
    full, lungs = (cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
                   for m in (review.pre.mask.full, review.pre.mask.lungs))
    contours = outline_contours(full, lungs)
    traces = []
    for part, colour in (("added", ADDED_AREA_COLOR), ("lungs", LUNG_COLOR)):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for contour in contours[part]:
            points = contour[:, 0, :].astype(float)
            points = np.vstack([points, points[:1]])
            xs += [*points[:, 0], None]
            ys += [*points[:, 1], None]
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"color": _hex(colour), "width": 2},
                                 name="lung outline" if part == "lungs" else ADDED_AREA_NAME,
                                 hoverinfo="skip"))
    x0, y0, x1, y1 = review.pre.box_original
    box_colour = _hex(FALLBACK_BOX_COLOR if review.pre.fallback else BOX_COLOR)
    traces.append(go.Scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines",
                             line={"color": box_colour, "width": 2, "dash": "dot"}, name="crop box",
                             hoverinfo="skip"))
    return traces


def viewer_figure(review, finding: int | None, alpha: float, outline: bool,
                  centre: float, width: float, height_px: int = 720, cutoff: float = DEFAULT_CUTOFF,
                  invert: bool = False, max_side: int = MAX_VIEW_SIDE,
                  measuring: bool = False) -> go.Figure:
    """The image (windowed, inverted on request, the finding's heatmap blended with the page's
    opacity and cut-off when `finding` is not None) at up to `max_side` pixels, in original pixel
    coordinates, pannable and zoomable (a box is drawn instead when `measuring`)."""
    pixels = review.image.pixels
    scale = _view_scale(pixels.shape, max_side)
    shown = apply_window(pixels, centre, width)
    if invert:
        shown = 1.0 - shown
    heat = review.heatmap_original(finding) if finding is not None else None
    if scale < 1.0:
        size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
        shown = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
        heat = None if heat is None else cv2.resize(heat, size, interpolation=cv2.INTER_AREA)
    if heat is None:
        rgb = np.repeat((shown * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    else:
        rgb = overlay(shown, heat, alpha, cutoff)
    fig = go.Figure(go.Image(source=_png_uri(rgb), x0=0, y0=0, dx=1 / scale, dy=1 / scale,
                             hoverinfo="skip", name="x-ray"))
    if outline:
        for trace in _outline_traces(review):
            fig.add_trace(trace)
    height, width_px = review.image.original_size
    fig.update_xaxes(visible=False, range=[-0.5, width_px - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor="x", constrain="domain")
    fig.update_layout(height=height_px, margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      dragmode="select" if measuring else "pan",
                      showlegend=False, plot_bgcolor="black", paper_bgcolor="black",
                      uirevision=review.image.sha256)  # zoom survives control changes
    return fig


def _finding_labels(review) -> list[str]:
    return [review.labels[k] for k in review.order(include_all=True)]


def _pick_from_table(key: str, table_labels: list[str]) -> None:
    """Table row clicked: show that finding's map."""
    rows = st.session_state[f"{key}_table"].selection.rows
    if rows:
        st.session_state[f"{key}_finding"] = table_labels[rows[0]]
        st.session_state[f"{key}_heat"] = True


def _reset_window(key: str, window: tuple[float, float]) -> None:
    st.session_state[f"{key}_centre"], st.session_state[f"{key}_width"] = window


def _preset(key: str) -> None:
    """A preset was chosen: its window replaces the sliders' values."""
    name = st.session_state.get(f"{key}_preset")
    if name in PRESETS:
        _reset_window(key, PRESETS[name])


def show_viewer(review, key: str = "viewer") -> None:
    """The viewer for one review; `key` keeps several viewers (and studies) apart."""
    key = f"{key}_{review.image.sha256[:12]}"  # each study keeps its own window and finding
    window = default_window(review)
    labels = _finding_labels(review)
    st.session_state.setdefault(f"{key}_centre", round(window[0], 3))
    st.session_state.setdefault(f"{key}_width", round(min(max(window[1], MIN_WIDTH), 2.0), 3))
    view_col, side_col = st.columns([3, 2])
    with side_col:
        finding = st.selectbox("Heatmap of", labels, key=f"{key}_finding",
                               help="or click a row of the findings table")
        c1, c2 = st.columns(2)
        show_heat = c1.toggle("Heatmap", value=True, key=f"{key}_heat")
        outline = c2.toggle("Lung outline", value=True, key=f"{key}_outline")
        # the page's heatmap settings (Review page sliders; their defaults elsewhere)
        alpha = float(st.session_state.get("w_alpha", DEFAULT_ALPHA))
        cutoff = float(st.session_state.get("w_cutoff", DEFAULT_CUTOFF))
        st.segmented_control("Window preset", list(PRESETS), key=f"{key}_preset",
                             on_change=_preset, args=(key,),
                             help="lung, mediastinum or bone window; the sliders fine-tune it")
        centre = st.slider("Window centre (level)", 0.0, 1.0, step=0.005, key=f"{key}_centre",
                           help="in units of the image's range; DICOM starts at its VOI window")
        width = st.slider("Window width", MIN_WIDTH, 2.0, step=0.005, key=f"{key}_width")
        c3, c4 = st.columns(2)
        c3.button("Reset window", key=f"{key}_reset", on_click=_reset_window,
                  args=(key, (round(window[0], 3), round(min(max(window[1], MIN_WIDTH), 2.0), 3))))
        invert = c4.toggle("Invert", key=f"{key}_invert", help="white lungs, black bone")
        measuring = c3.toggle("Measure", key=f"{key}_measure",
                              help="drag a box: its diagonal is measured (mm with the DICOM's "
                                   "pixel spacing, pixels otherwise)")
        large = max(review.image.pixels.shape) > FIRST_VIEW_SIDE
        full = c4.toggle("Full resolution", key=f"{key}_full", disabled=not large,
                         help="this large image is shown downsampled first (faster)" if large
                         else "shown at full resolution")
        table = review.table()
        # the narrow side column shows what picks a map; the page's own table has the rest
        st.dataframe(table, hide_index=True, width="stretch", key=f"{key}_table",
                     on_select=lambda: _pick_from_table(key, table["finding"].tolist()),
                     selection_mode="single-row",
                     column_order=["finding", "probability", "threshold", "positive"],
                     column_config={"probability": st.column_config.ProgressColumn(
                         "probability", min_value=0.0, max_value=1.0, format="%.2f", width="small"),
                         "threshold": st.column_config.NumberColumn("threshold", format="%.2f", width="small"),
                         "positive": st.column_config.CheckboxColumn("positive", width="small")})
    k = review.labels.index(finding)
    with view_col:
        fig = viewer_figure(review, k if show_heat else None, alpha, outline, centre, width,
                            cutoff=cutoff, invert=invert, measuring=measuring,
                            max_side=MAX_VIEW_SIDE if full or not large else FIRST_VIEW_SIDE)
        event = st.plotly_chart(fig, config=PLOT_CONFIG, key=f"{key}_figure", width="stretch",
                                on_select="rerun" if measuring else "ignore",
                                selection_mode="box" if measuring else ("points", "box", "lasso"))
        boxes = (event.selection.get("box") or []) if measuring and event else []
        if boxes:
            st.info(measure(review, tuple(boxes[-1]["x"]), tuple(boxes[-1]["y"])))
        elif measuring:
            st.caption("Measure: drag a box on the image; its diagonal is measured."
                       + ("" if pixel_spacing(review) else " This image has no pixel spacing: "
                          "distances are in pixels."))
        caption = review.title(k) if show_heat else "X-ray without heatmap"
        caption += (f" (opacity {alpha:.2f}, values below {cutoff:.2f} not drawn, as on the page)"
                    if show_heat else "")
        if large and not full:
            caption += f". Shown at {FIRST_VIEW_SIDE} px first: 'Full resolution' for every pixel"
        if review.pre.fallback:
            fallback_warning(review)
        st.caption(f"{caption}. Scroll to zoom, drag to pan, double-click to reset the view "
                   "(changing a control shows the whole image again).")
