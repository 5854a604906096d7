"""Horizontal fusion: K same-shape proxies (replicates: seeds, learning rates) trained as one model, each its own."""
