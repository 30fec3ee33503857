"""Patient-level bootstrap intervals at PadChest scale: 35 labels, 18,000 test images,
1,000 resamples, for one model, for every member and ensemble of a five-member bundle, and
for a paired comparison of two bundles."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks.common import timed, write_result

IMAGES, LABELS, MEMBERS, RESAMPLES = 18_000, 35, 5, 1_000


def problem(seed: int = 0):
    """Patients with 1-3 images, prevalences from 30% down to 0.3%, binormal member scores."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(IMAGES), rng.integers(1, 4, IMAGES))[:IMAGES]
    prevalence = np.geomspace(0.3, 0.003, LABELS)
    targets = rng.random((IMAGES, LABELS)) < prevalence
    logits = rng.normal(size=(MEMBERS, IMAGES, LABELS)) + 1.5 * targets - 2.0
    return patients, targets, 1 / (1 + np.exp(-logits))


def main() -> int:
    from cxr_core.evaluation.bootstrap import model_intervals, resample_groups
    from cxr_core.evaluation.compare import compare_scores
    from cxr_core.evaluation.evaluation import model_outputs
    from cxr_core.modeling.thresholds import choose_thresholds

    patients, targets, member_probs = problem()
    labels = [f"label {k}" for k in range(LABELS)]
    ens_t = choose_thresholds(targets, member_probs.mean(axis=0))
    mem_t = np.stack([choose_thresholds(targets, p) for p in member_probs])
    outputs = model_outputs(member_probs, [f"m{m}" for m in range(MEMBERS)], ens_t, mem_t)
    ctp = {"CTP": outputs["CTP"]}
    result = {
        "images": IMAGES, "labels": LABELS, "resamples": RESAMPLES,
        "patients": int(len(np.unique(patients))), "models_in_bundle": len(outputs),
        "resampling_s": timed(lambda: resample_groups(patients, RESAMPLES, 0), repeat=3),
        "one_model_auc_f1_macro_s": timed(lambda: model_intervals(ctp, targets, labels, patients,
                                                                  RESAMPLES, 0), repeat=3),
        "all_models_s": timed(lambda: model_intervals(outputs, targets, labels, patients,
                                                      RESAMPLES, 0), repeat=1, warmup=0),
        "paired_comparison_s": timed(lambda: compare_scores(targets, outputs["m0"][0], outputs["CTP"][0],
                                                            labels, patients, RESAMPLES, 0), repeat=3),
    }
    start_cpu, start = time.process_time(), time.perf_counter()
    model_intervals(outputs, targets, labels, patients, RESAMPLES, 0)
    # CPU seconds hardly depend on how many other processes share the cores; wall time does
    result["all_models_cpu_s"] = time.process_time() - start_cpu
    result["all_models_wall_s_same_run"] = time.perf_counter() - start
    result["load_average_1min"] = os.getloadavg()[0]
    write_result("bootstrap", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
