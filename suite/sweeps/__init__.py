"""Sweeps: ablation specs expanded into runs, and the runner that trains them."""
