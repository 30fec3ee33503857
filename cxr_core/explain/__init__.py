"""Explanations: closed-form all-label Grad-CAM, inference engines, ensemble and uncertainty maps, overlays, reports."""
