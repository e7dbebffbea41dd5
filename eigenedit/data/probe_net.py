"""Saving and loading the small probe networks the project trains (safetensors + config.json, never pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import torch
from safetensors.torch import load_file, save_file


class ProbeNet(torch.nn.Module):
    """A torch module with ``self.config`` (its constructor arguments) that saves to and loads from a folder."""

    config: dict

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(self.config))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Self:
        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"no {cls.__name__} in {path} (expected config.json and model.safetensors)")
        model = cls(**json.loads((path / "config.json").read_text()))
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model.eval().requires_grad_(False)
