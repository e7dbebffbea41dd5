"""eigenedit: edit diffusion-model images along eigenvectors of the model's own self-attention weights."""

from eigenedit.core.attention import AttentionWeights, list_attention_layers, read_attention_weights
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, factorize, random_directions
from eigenedit.core.sampling import Edit, edit_images, invert, noise_from_seeds, sample
from eigenedit.evaluation.metrics import psnr
from eigenedit.models import DiffusionModel, load_model

__all__ = [
    "DECOMPOSITIONS",
    "AttentionWeights",
    "DiffusionModel",
    "Directions",
    "Edit",
    "compute_directions",
    "edit_images",
    "factorize",
    "invert",
    "list_attention_layers",
    "load_model",
    "noise_from_seeds",
    "psnr",
    "random_directions",
    "read_attention_weights",
    "sample",
]
