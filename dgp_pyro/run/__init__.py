"""A training run on disk: its settings (:mod:`.config`), its folder (:mod:`.folder`) and its
checkpoints (:mod:`.checkpoint`). The names below are the public API of a run."""

from dgp_pyro.run.config import CONFIG, RUN_FORMAT_VERSION, RunConfig, read_run_config, write_config
from dgp_pyro.run.folder import (
    CHECKPOINTS,
    LOSS_LOG,
    PREDICTIONS,
    SPLIT,
    Run,
    build_network,
    load_run,
    prepare_run_dir,
    read_loss_log,
    resolve_device,
    scorer_name,
    write_loss_log,
    write_split,
)

__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "LOSS_LOG",
    "PREDICTIONS",
    "RUN_FORMAT_VERSION",
    "SPLIT",
    "Run",
    "RunConfig",
    "build_network",
    "load_run",
    "prepare_run_dir",
    "read_loss_log",
    "read_run_config",
    "resolve_device",
    "scorer_name",
    "write_config",
    "write_loss_log",
    "write_split",
]
