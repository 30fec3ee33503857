"""A short soak of one Reviewer (60 reviews; `make bench` runs 300): flat memory, nothing leaked."""

from benchmarks.bench_soak import soak


def test_sixty_reviews_keep_memory_flat_and_leak_no_files_or_threads():
    # a full collection before each sample: report figures sit in reference cycles until the
    # collector runs (docs/reliability.md); what must not grow is memory still held after it
    result = soak(reviews=60, warmup=20, report_every=10, collect_each=True)
    assert result["distinct_images"] >= 4
    assert result["new_open_files"] == [], result["new_open_files"]
    assert result["open_files_end"] <= result["open_files_after_warmup"]
    assert result["os_threads_end"] <= result["os_threads_after_warmup"]
    assert result["python_threads_end"] <= result["python_threads_after_warmup"]
    # resident memory after the warm-up stays within a small band (a leak of one 512 px float
    # image per review, 1 MiB, would already add 40 MiB over these 40 reviews)
    assert result["rss_band_mb"] < 16, result["rss_mb_every_10"]
