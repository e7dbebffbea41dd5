"""Measuring edits: probes that read attributes, metrics, baselines (random, h-space PCA, pullback), the
evaluation protocol (``evaluate``) and its reports."""
