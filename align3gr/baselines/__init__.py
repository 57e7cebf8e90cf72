"""Baselines every run is compared with: the most-popular list and the `embed` stage's collaborative encoder."""
