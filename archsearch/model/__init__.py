"""HybridLM, its configuration and named presets."""
