"""HybridLM, its configuration, named presets and iso-parameter sizing."""
