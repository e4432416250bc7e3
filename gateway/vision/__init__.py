"""Camera pipeline: from sampled frames to pile and bin-overflow lifecycle events (issue 6)."""
