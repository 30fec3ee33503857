"""Reviewing X-rays: the review pipeline, batch explanation, the feedback store and retraining from feedback."""
