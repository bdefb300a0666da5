"""Training FMA-Net++: config (TOML), on-the-fly degraded data, losses and the three-stage loop."""

from fmanetpp_cli.train.config import TrainConfig, load_config
from fmanetpp_cli.train.loop import StepInfo, TrainResult, train

__all__ = ["StepInfo", "TrainConfig", "TrainResult", "load_config", "train"]
