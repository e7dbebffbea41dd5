"""What core needs from a model, and what a model declares it can do: the ``EditableModel`` protocol.

Every adapter in ``eigenedit.models`` implements it; core and the apps read these declarations instead of probing
for attributes. A backbone's quirks (how its attention weights are read, which layers it has) live in its adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from eigenedit.core.attention import AttentionLayer, AttentionWeights


class EditableModel(Protocol):
    """A denoiser (``unet``: a UNet or a transformer) with its scheduler, and its capabilities.

    - ``latent``: the denoiser works on VAE latents (``encode`` / ``decode``);
    - ``flow_matching``: it predicts a velocity (SD3, Flux): ``set_timesteps`` and ``predict_velocity``
      (``FlowModel``), sampled by ``eigenedit.core.flow``; otherwise DDIM on ``predict_eps``;
    - ``conditional``: it takes a prompt (``set_prompt``; a ValueError where it does not), with guidance
      ``default_guidance`` unless told;
    - ``attention_layers()`` lists its self-attention layers, ``attention_weights(layer)`` reads one layer's
      projections the way this backbone computes them;
    - ``set_difficulty``: the terrain model's difficulty input (a ValueError elsewhere).
    """

    unet: torch.nn.Module
    scheduler: Any
    model_id: str
    edit_defaults: dict
    latent: bool
    flow_matching: bool
    conditional: bool
    default_guidance: float | None

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def sample_shape(self) -> tuple[int, int, int]: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...

    def set_prompt(self, prompt: str = "", negative_prompt: str = "", guidance_scale: float | None = None) -> None: ...

    def set_difficulty(self, difficulty: int) -> None: ...

    def attention_layers(self) -> list[AttentionLayer]: ...

    def attention_weights(self, layer: str, dtype: torch.dtype = ..., copy: bool = True) -> AttentionWeights: ...


class FlowModel(EditableModel, Protocol):
    """A flow-matching ``EditableModel`` (``flow_matching`` True): Euler steps on its velocity."""

    def set_timesteps(self, num_steps: int) -> torch.Tensor: ...

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor: ...

    def check_edit_location(self, location: str) -> None:
        """A ValueError for an edit location this backbone cannot edit (a joint block whose output starts with the
        text stream)."""
        ...
