"""Reading a weights file: the tensors of a state dict saved with ``torch.save``.

One reader for every backbone (:mod:`~dgp_pyro.nets.backbone` for the ResNets,
:mod:`~dgp_pyro.nets.efficientnet_lite` for the packaged and local EfficientNet-Lite weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from dgp_pyro.errors import DGPError


def read_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a state-dict file (``weights_only`` loading: no code in the file runs).

    Accepts a bare state dict or a checkpoint dict holding one under ``state_dict``,
    ``model_state_dict``, ``model`` or ``net``.

    Raises:
        DGPError: the file is missing, unreadable, corrupt or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DGPError("weights file not found", path, hint="check the path, or use weights=None")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip/EOF errors all mean an unreadable file
        raise DGPError(
            f"cannot read the weights file as a PyTorch state dict ({type(exc).__name__}: {exc})",
            path,
            hint="the file may be truncated or not a torch.save file; save it with "
            "torch.save(model.state_dict(), path)",
        ) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise DGPError(
            f"the weights file holds no tensors (found {type(obj).__name__})",
            path,
            hint="save a state dict: torch.save(model.state_dict(), path)",
        )
    return {str(k): v for k, v in tensors.items()}
