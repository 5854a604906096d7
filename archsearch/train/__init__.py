"""Training proxies with Lightning: ``TrainConfig``, ``train(cfg) -> summary``, and the ``--dry-run`` memory plan."""

from archsearch.train.config import DivergenceConfig, FaultInjection, TrainConfig

__all__ = ["DivergenceConfig", "FaultInjection", "TrainConfig", "plan", "train"]


def __getattr__(name: str):  # lazy: the config imports without Lightning
    if name == "train":
        from archsearch.train.run import train

        return train
    if name == "plan":
        from archsearch.train.dry_run import plan

        return plan
    raise AttributeError(name)
