"""The pretrained terrain model of ``adaptive-terrain-diffusion`` (MIT) as an eigenedit model: ``terrain128``.

The package ships one ONNX file: an ADM consistency UNet (openai/consistency_models) for 1x128x128 heightmaps,
conditioned on a continuous difficulty, with inputs ``noisy`` (B,1,128,128), ``sigma`` (B,), ``difficulty`` (B,)
= (d - 1) / 99 for d in 1..100 and output ``denoised``. Its weights are read with ``onnx`` into eigenedit's
``ADMUNet``: the architecture and the consistency-model preconditioning are inferred from the graph, and the
GroupNorm affine weights, which the exporter folded into anonymous tensors feeding ``InstanceNormalization ->
Reshape -> Mul -> Add`` chains, are traced back to their modules. onnxruntime is not needed (tests use it to
check the port).

eigenedit samples with DDIM on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. ``EDMConsistencyUNet.forward``
maps that state to the EDM one, x = x_t / sqrt(abar_t) at sigma_t = sqrt((1 - abar_t) / abar_t), and returns
the denoiser's x0 (prediction type "sample"). The 1000 timesteps follow a Karras (rho = 7) sigma grid from
sigma_min to sigma_max, and DDIM uses trailing timesteps, so one DDIM step from t = 999 is the consistency
model's one-step sample D(x, sigma_max).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from torch import nn

from eigenedit.models.adm import ADMConfig, ADMUNet, GroupNorm32, UNetLikeConfig, UNetLikeOutput, load_weights
from eigenedit.models.base import DiffusionModel, read_model_defaults

MODEL_NAME = "terrain128"
PACKAGE = "terrain_diffusion"  # import name of the PyPI package adaptive-terrain-diffusion
BUNDLED_ONNX = "weights/terrain_consistency_unet_difficulty100.onnx"
INSTALL_HINT = 'pip install "eigenedit[terrain]"'
NUM_TIMESTEPS = 1000
SIGMA_MAX = 80.0  # the package's one-step sampling noise level (TerrainGenerator.sigma_max); not in the graph
KARRAS_RHO = 7.0
NUM_DIFFICULTIES = 100
DEFAULT_DIFFICULTY = 50
HEIGHT_RANGE = 22.16864013671875  # metres; TerrainGenerator.height_range
ASINH_SCALE = 0.1  # TerrainGenerator.asinh_scale
PIXEL_SIZE = 0.1  # metres per pixel: the package's default horizontal_scale

# Edit defaults; the CLI fills options the user leaves unset from them (1 step: a consistency model). They come from
# the protocol (``python -m eigenedit.evaluation.protocol_run --model terrain128``, its chosen row); until it has run
# on terrain128 these are the earlier benchmarks' (benchmarks/terrain.py, results/terrain.md: ov-left at this 16x16
# encoder layer; alpha 0.62 is where a random direction changes the heightmap by 0.04).
MEASURED_DEFAULTS_DIR = Path(__file__).parent.parent / "pretrained" / MODEL_NAME  # its eigenedit.json, if any
TERRAIN_EDIT_DEFAULTS = {
    "layer": "network.input_blocks.16.1",
    "decomposition": "ov-left",
    "operator": "spectral",
    "location": "network.input_blocks.16.1",
    "t_edit": 0,
    "alphas": [-20.0, -10.0, 0.0, 10.0, 20.0],
    "operator_alphas": {"shift": [-0.62, -0.31, 0.0, 0.31, 0.62]},
    "steps": 1,
}


@dataclass(frozen=True)
class ConsistencyPreconditioning:
    """D(x, sigma) = clip(c_skip x + c_out F(c_in x, c_noise)) with consistency_models' boundary condition:
    c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2), c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = noise_scale * log(sigma + log_offset)."""

    sigma_min: float = 0.002
    sigma_max: float = SIGMA_MAX
    sigma_data: float = 0.5
    noise_scale: float = 250.0
    log_offset: float = 0.0
    clip: tuple[float, float] | None = (-1.0, 1.0)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for sigma (B,), in the same operation order as the exported graph."""
        sd2 = self.sigma_data**2
        shifted = sigma - self.sigma_min
        c_skip = 1 / (shifted**2 + sd2) * sd2
        root = torch.sqrt(sigma**2 + sd2)
        c_out = shifted * self.sigma_data / root
        c_in = 1 / root
        c_noise = torch.log(sigma + self.log_offset if self.log_offset else sigma) * self.noise_scale
        return c_skip, c_out, c_in, c_noise


def karras_sigmas(num: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> torch.Tensor:
    """``num`` noise levels (float64), increasing from sigma_min to sigma_max, spaced as in Karras et al. (EDM)."""
    ramp = torch.linspace(0, 1, num, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + ramp * (hi - lo)) ** rho


class EDMConsistencyUNet(nn.Module):
    """An ADM network with consistency-model preconditioning, callable like a diffusers UNet.

    ``denoise(noisy, sigma, label)`` is the exported model D. ``forward(sample, timestep)`` takes the DDPM-style
    state x_t of eigenedit's DDIM sampler and returns x0 = D(x_t / sqrt(abar_t), sigma_t, difficulty) in
    ``.sample``. ``difficulty`` (1..100) conditions every call.
    """

    def __init__(
        self, network: ADMUNet, preconditioning: ConsistencyPreconditioning, difficulty: int = DEFAULT_DIFFICULTY
    ):
        super().__init__()
        self.network = network
        self.preconditioning = preconditioning
        cfg = network.config
        self.config = UNetLikeConfig(cfg.image_size, cfg.in_channels, cfg.out_channels)
        sigmas = karras_sigmas(NUM_TIMESTEPS, preconditioning.sigma_min, preconditioning.sigma_max)
        self.register_buffer("sigmas", sigmas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", (1 / (1 + sigmas**2)).float(), persistent=False)
        self.difficulty = difficulty

    @property
    def difficulty(self) -> int:
        return self._difficulty

    @difficulty.setter
    def difficulty(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or not 1 <= value <= NUM_DIFFICULTIES:
            raise ValueError(f"difficulty must be a whole number from 1 to {NUM_DIFFICULTIES}, got {value!r}")
        self._difficulty = int(value)

    def difficulty_label(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The network's label input for ``self.difficulty``: (d - 1) / 99, shape (batch,)."""
        return torch.full((batch,), (self._difficulty - 1) / (NUM_DIFFICULTIES - 1), device=device)

    def denoise(self, noisy: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The consistency function D(noisy, sigma, label) of the ONNX model (same inputs, same output)."""
        c_skip, c_out, c_in, c_noise = self.preconditioning.scalings(sigma.to(noisy.dtype))
        expand = (-1, *([1] * (noisy.ndim - 1)))
        out = self.network(c_in.view(expand) * noisy, c_noise, label.to(noisy.dtype))
        denoised = c_out.view(expand) * out + c_skip.view(expand) * noisy
        clip = self.preconditioning.clip
        return denoised if clip is None else denoised.clamp(*clip)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> UNetLikeOutput:
        t = torch.as_tensor(timestep, device=sample.device).long().reshape(-1).expand(sample.shape[0])
        sigma = self.sigmas[t]
        scale = (1 + sigma.double() ** 2).sqrt().to(sample.dtype)  # 1 / sqrt(abar_t)
        noisy = sample * scale.view(-1, *([1] * (sample.ndim - 1)))
        return UNetLikeOutput(self.denoise(noisy, sigma, self.difficulty_label(sample.shape[0], sample.device)))


def terrain_scheduler(unet: EDMConsistencyUNet) -> DDIMScheduler:
    """DDIM over the UNet's sigma grid: abar_t = 1 / (1 + sigma_t^2), trailing timesteps (1 step -> t = 999)."""
    abar = unet.alphas_cumprod.double()
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    scheduler = DDIMScheduler(
        num_train_timesteps=NUM_TIMESTEPS,
        trained_betas=betas.numpy(),
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type="epsilon",
    )
    scheduler.alphas_cumprod = unet.alphas_cumprod.detach().cpu().clone()  # exact, not a float32 cumprod of betas
    return scheduler


# ---------------------------------------------------------------------------------------------- ONNX reading


def bundled_onnx_path() -> Path:
    """The ONNX file shipped in the installed package (found without importing onnxruntime)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise ValueError(
            f"model {MODEL_NAME!r} needs the package adaptive-terrain-diffusion: {INSTALL_HINT} "
            "(or give the .onnx file's path)"
        )
    resource = importlib.resources.files(PACKAGE).joinpath(BUNDLED_ONNX)
    if not resource.is_file():
        raise FileNotFoundError(f"the installed terrain package lacks its model ({BUNDLED_ONNX}); reinstall it")
    return Path(str(resource))


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ValueError(f"reading the terrain model needs the onnx package: {INSTALL_HINT}") from None
    return onnx, numpy_helper


class OnnxGraph:
    """Constants (named and anonymous initializers, Constant nodes), producers and consumers of an ONNX graph."""

    def __init__(self, model):
        _, numpy_helper = _import_onnx()
        self.model, graph = model, model.graph
        self.nodes = list(graph.node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def scalar_input(self, node) -> float | None:
        """The value of a node's one scalar constant input, if it has one."""
        for name in node.input:
            value = self.const(name)
            if value is not None and value.size == 1:
                return float(value.reshape(()))
        return None

    def only_consumer(self, name: str, op_type: str):
        """The one node of type ``op_type`` that reads tensor ``name`` (None if there is not exactly one)."""
        found = [n for n in self.consumers.get(name, []) if n.op_type == op_type]
        return found[0] if len(found) == 1 else None


def _scope(node) -> str | None:
    """The innermost module name the exporter recorded for a node (metadata), if any."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = re.findall(r"'([^']*)'", prop.value)
            # a slice of a Sequential (ResBlock's in_layers[:-1]) is recorded as ".slice(None, -1, None)"
            return re.sub(r"\.slice\([^)]*\)", "", scopes[-2]) if len(scopes) >= 2 else None
    return None


def _group_norms(graph: OnnxGraph) -> list[dict]:
    """Each GroupNorm of the graph in topological order: groups, eps, weight, bias (and the recorded scope).

    The exporter writes GroupNorm(x) as Reshape(N, G, -1) -> InstanceNormalization(ones, zeros) -> Reshape back
    -> Mul(weight (C,1,1)) -> Add(bias (C,1,1)); weight and bias are anonymous constants.
    """
    norms = []
    for node in graph.nodes:
        if node.op_type != "InstanceNormalization":
            continue
        unit_scale, zero_bias = graph.const(node.input[1]), graph.const(node.input[2])
        if unit_scale is None or zero_bias is None or not (np.all(unit_scale == 1) and np.all(zero_bias == 0)):
            raise ValueError("unexpected InstanceNormalization with its own affine weights in the terrain graph")
        reshape_in = graph.producer[node.input[0]]
        reshape_out = graph.only_consumer(node.output[0], "Reshape")
        mul = reshape_out and graph.only_consumer(reshape_out.output[0], "Mul")
        add = mul and graph.only_consumer(mul.output[0], "Add")
        weight = mul and next((graph.const(i) for i in mul.input if graph.const(i) is not None), None)
        bias = add and next((graph.const(i) for i in add.input if graph.const(i) is not None), None)
        if reshape_in.op_type != "Reshape" or weight is None or bias is None:
            raise ValueError(f"cannot trace the GroupNorm weights after node {node.name!r}")
        groups = int(graph.const(reshape_in.input[1])[1])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        norms.append(dict(groups=groups, eps=eps, weight=weight.reshape(-1), bias=bias.reshape(-1), scope=_scope(mul)))
    return norms


def _attention_heads(graph: OnnxGraph, qkv_weight: str) -> tuple[int, bool]:
    """(head size, new head order?) of the attention block whose fused qkv conv uses ``qkv_weight``.

    Both orders scale q by d^-1/4 right after splitting; in the new order the scaled q is then reshaped into
    heads before the Einsum, in the legacy order heads were reshaped before the split and it goes to the Einsum.
    """
    conv = next(n for n in graph.nodes if n.op_type == "Conv" and qkv_weight in n.input)
    frontier, seen = [conv.output[0]], set()
    while frontier:
        name = frontier.pop(0)
        for node in graph.consumers.get(name, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            scale = graph.scalar_input(node) if node.op_type == "Mul" else None
            if scale is not None and 0 < scale < 1:
                head_dim = round(scale**-4)
                next_ops = {n.op_type for n in graph.consumers.get(node.output[0], [])}
                if next_ops == {"Einsum"}:
                    return head_dim, False
                if next_ops == {"Reshape"}:
                    return head_dim, True
                raise ValueError(f"unrecognised attention pattern after {qkv_weight}: {next_ops}")
            if node.op_type in ("Reshape", "Split"):
                frontier.extend(node.output)
    raise ValueError(f"cannot find the attention scale after {qkv_weight}")


def _preconditioning(graph: OnnxGraph) -> ConsistencyPreconditioning:
    """Read sigma_min, sigma_data, c_noise = a * log(sigma + b) and the output clip from the graph's ops."""
    sub = graph.only_consumer("sigma", "Sub")
    sigma_min = graph.scalar_input(sub) if sub is not None else None
    c_out = sub and graph.only_consumer(sub.output[0], "Mul")
    sigma_data = graph.scalar_input(c_out) if c_out is not None else None
    log_in, log_offset = "sigma", 0.0
    add = graph.only_consumer("sigma", "Add")
    if add is not None and graph.scalar_input(add) is not None:
        log_in, log_offset = add.output[0], graph.scalar_input(add)
    log = graph.only_consumer(log_in, "Log")
    noise_mul = log and graph.only_consumer(log.output[0], "Mul")
    noise_scale = graph.scalar_input(noise_mul) if noise_mul is not None else None
    if None in (sigma_min, sigma_data, noise_scale):
        raise ValueError("cannot read the consistency-model preconditioning from the terrain graph")
    out_node = graph.producer[graph.model.graph.output[0].name]
    clip = None
    if out_node.op_type == "Clip":
        clip = (float(graph.const(out_node.input[1])), float(graph.const(out_node.input[2])))
    return ConsistencyPreconditioning(
        sigma_min=sigma_min, sigma_data=sigma_data, noise_scale=noise_scale, log_offset=log_offset, clip=clip
    )


def infer_adm_config(graph: OnnxGraph, prefix: str = "network.") -> ADMConfig:
    """The ``ADMConfig`` of the exported UNet, from its weight names and shapes and the graph's shapes and ops."""
    onnx, _ = _import_onnx()
    weights = {k[len(prefix) :]: v for k, v in graph.constants.items() if k.startswith(prefix)}
    first, last = weights["input_blocks.0.0.weight"], weights["out.2.weight"]
    model_channels, in_channels, out_channels = first.shape[0], first.shape[1], last.shape[0]
    image_size = graph.model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    inferred = onnx.shape_inference.infer_shapes(graph.model)
    out_size = {}  # conv weight name -> spatial size of the conv output
    spatial = {v.name: v.type.tensor_type.shape.dim for v in inferred.graph.value_info}
    for node in graph.nodes:
        if node.op_type == "Conv" and node.input[1].startswith(prefix):
            dims = spatial.get(node.output[0])
            out_size[node.input[1][len(prefix) :]] = dims[-1].dim_value if dims else None

    n_input = 1 + max(int(m) for m in re.findall(r"^input_blocks\.(\d+)\.", "\n".join(weights), re.M))
    levels: list[list[int]] = [[]]
    attention_ds: set[int] = set()
    resolution, ds, resblock_updown, conv_resample = image_size, 1, False, True
    for i in range(1, n_input):
        block = f"input_blocks.{i}."
        if f"{block}0.in_layers.2.weight" in weights:
            size = out_size[f"{block}0.out_layers.3.weight"]
            if size < resolution:  # a ResBlock with down=True
                resblock_updown, resolution, ds = True, size, ds * 2
                levels.append([])
                continue
            levels[-1].append(weights[f"{block}0.out_layers.3.weight"].shape[0])
            if f"{block}1.qkv.weight" in weights:
                attention_ds.add(ds)
        else:  # Downsample: a strided conv ("op"), or parameter-free average pooling
            conv_resample = f"{block}0.op.weight" in weights
            resolution, ds = resolution // 2, ds * 2
            levels.append([])
    counts = {len(level) for level in levels}
    if len(counts) != 1:
        raise ValueError(f"irregular UNet: res blocks per level {[len(level) for level in levels]}")
    channel_mult = tuple(level[0] // model_channels for level in levels)

    head_dims, new_order = set(), set()
    for name in weights:
        if name.endswith(".qkv.weight"):
            head_dim, is_new = _attention_heads(graph, prefix + name)
            head_dims.add(head_dim)
            new_order.add(is_new)
    if len(head_dims) != 1 or len(new_order) != 1:
        raise ValueError(f"attention blocks differ in head size {head_dims} or head order; not supported")
    qkv_ndim = next(v.ndim for k, v in weights.items() if k.endswith(".qkv.weight"))
    label = weights.get("label_emb.0.weight")
    emb = weights["input_blocks.1.0.emb_layers.1.weight"]
    return ADMConfig(
        image_size=image_size,
        in_channels=in_channels,
        model_channels=model_channels,
        out_channels=out_channels,
        num_res_blocks=counts.pop(),
        attention_resolutions=tuple(sorted(attention_ds)),
        channel_mult=channel_mult,
        conv_resample=conv_resample,
        num_classes=weights["label_emb.weight"].shape[0] if "label_emb.weight" in weights else None,
        label_dim=label.shape[1] if label is not None else None,
        num_head_channels=head_dims.pop(),
        use_scale_shift_norm=emb.shape[0] == 2 * weights["input_blocks.1.0.out_layers.3.weight"].shape[0],
        resblock_updown=resblock_updown,
        use_new_attention_order=new_order.pop(),
        attention_conv_dims=qkv_ndim - 2,
    )


def read_onnx_model(path: str | Path, prefix: str = "network.") -> tuple[ADMUNet, ConsistencyPreconditioning]:
    """Build the ADM network of an exported consistency model and load every weight from the ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    onnx, _ = _import_onnx()
    try:
        graph = OnnxGraph(onnx.load(str(path)))
    except Exception as err:  # onnx raises DecodeError and friends for a corrupt file
        raise ValueError(f"cannot read ONNX model {path}: {err}") from None
    config = infer_adm_config(graph, prefix)
    network = ADMUNet(config)
    state = {k[len(prefix) :]: torch.from_numpy(v.copy()) for k, v in graph.constants.items() if k.startswith(prefix)}
    module_norms = [(n, m) for n, m in network.named_modules() if isinstance(m, GroupNorm32)]  # execution order
    graph_norms = _group_norms(graph)
    if len(graph_norms) != len(module_norms):
        raise ValueError(f"the graph has {len(graph_norms)} GroupNorms, the inferred UNet {len(module_norms)}")
    for (name, module), found in zip(module_norms, graph_norms, strict=True):
        if found["scope"] is not None and found["scope"] != prefix + name:
            raise ValueError(f"GroupNorm order differs from the graph: {name} vs {found['scope']}")
        if (found["groups"], found["weight"].shape[0]) != (module.num_groups, module.num_channels):
            raise ValueError(f"GroupNorm {name} has {found['groups']} groups / {found['weight'].shape[0]} channels")
        module.eps = found["eps"]
        state[f"{name}.weight"] = torch.from_numpy(found["weight"].copy())
        state[f"{name}.bias"] = torch.from_numpy(found["bias"].copy())
    load_weights(network, state)
    return network.eval().requires_grad_(False), _preconditioning(graph)


class TerrainModel(DiffusionModel):
    """The terrain consistency model: a ``DiffusionModel`` whose UNet (``EDMConsistencyUNet``) takes a difficulty."""

    def set_difficulty(self, difficulty: int) -> None:
        """Condition every later prediction on ``difficulty``, a whole number from 1 to 100."""
        self.unet.difficulty = difficulty


def load_terrain_model(
    path: str | Path | None = None, device: str = "cpu", difficulty: int = DEFAULT_DIFFICULTY
) -> TerrainModel:
    """``terrain128``: the package's bundled model (or an ONNX file at ``path``) as an eigenedit model."""
    try:
        network, preconditioning = read_onnx_model(bundled_onnx_path() if path is None else path)
    except FileNotFoundError as err:  # one line through the CLI, like every other unknown model
        raise ValueError(str(err)) from None
    unet = EDMConsistencyUNet(network, preconditioning, difficulty).to(device)
    model_id = MODEL_NAME if path is None else str(path)
    model = TerrainModel(unet, terrain_scheduler(unet), model_id, "sample", dict(TERRAIN_EDIT_DEFAULTS))
    if path is None:  # the protocol's choice for the bundled model, where it has been measured
        model.edit_defaults = read_model_defaults(MEASURED_DEFAULTS_DIR, model, dict(TERRAIN_EDIT_DEFAULTS))
    return model


# ---------------------------------------------------------------------------------------------- heights


def to_heights(images: torch.Tensor, zero_floor: bool = True) -> torch.Tensor:
    """Model space [-1, 1] (B, 1, H, W) -> heights in metres (B, H, W), as the package's ``_from_model_space``."""
    unit = ((images[:, 0].float() + 1) * 0.5).clamp(0, 1)
    normalizer = float(np.arcsinh(HEIGHT_RANGE / ASINH_SCALE))
    heights = (ASINH_SCALE * torch.sinh(unit * normalizer)).clamp(0, HEIGHT_RANGE)
    if zero_floor:
        heights = heights - heights.amin(dim=(-2, -1), keepdim=True)
    return heights
