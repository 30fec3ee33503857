"""The Metrics page shows `localise`'s tables, flag and contact sheet, and the shortcut audit,
when the bundle carries them, and nothing of the kind when it does not."""

from __future__ import annotations

from cxr_core.modeling.bundle import Bundle
from cxr_core.review.localise import store_in_bundle
from tests.review.test_localise import synthetic_result
from tests.ui.test_dashboards import models_dir, page  # noqa: F401 (the fixture)


def test_metrics_page_shows_localisation_only_when_the_bundle_has_it(models_dir):  # noqa: F811
    at = page("1_Metrics.py")
    assert not any("point at the findings" in h.value for h in at.header)
    store_in_bundle(Bundle.load(models_dir / "child"), synthetic_result(), 200, 0)
    from ui.common import get_bundle

    get_bundle.clear()
    at = page("1_Metrics.py")
    assert any("point at the findings" in h.value for h in at.header)
    table = next(df.value for df in at.dataframe if "uniform over lungs" in df.value.columns)
    overall = table[(table["finding"] == "overall") & (table["measure"] == "pointing game")].iloc[0]
    assert overall["model"] == 0.7 and overall["average map"] == 0
    assert {"uniform over lungs low", "average map high"} <= set(table.columns)  # intervals named alike
    assert not any("_" in str(c) for c in table.columns)
    assert len(at.get("image")) == 1  # the contact sheet
    energy = next(df.value for df in at.dataframe if "energy on lungs" in df.value.columns)
    assert energy.set_index("finding").loc["all lung findings", "energy on lungs"] == 0.82
    assert any("nearly the same on every X-ray" in w.value and "pleural effusion" in w.value for w in at.warning)


def test_metrics_page_shows_the_shortcut_audit_when_the_bundle_has_one(models_dir):  # noqa: F811
    from cxr_core.evaluation.shortcut_audit import audit_bundle

    at = page("1_Metrics.py")
    assert not any("Shortcut audit" in h.value for h in at.header)
    audit_bundle(models_dir / "child", n_resamples=50)
    from ui.common import get_bundle

    get_bundle.clear()
    at = page("1_Metrics.py")
    assert any("Shortcut audit" in h.value for h in at.header)
    table = next(df.value for df in at.dataframe if "attribute" in df.value.columns)
    assert set(table["attribute"]) == {"all", "source"} and table["auc"].notna().any()
