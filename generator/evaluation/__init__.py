"""Likelihood of held-out data and statistics of generated music."""
