"""archsearch: search the layer mix (attention, Mamba, MLP ...) of hybrid language models.

Patterns -> layers -> model -> data -> train -> search -> plots, reports and exports.
"""

__version__ = "0.1.0"
