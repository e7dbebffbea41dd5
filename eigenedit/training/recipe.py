"""Resumable DDPM training of a small UNet2DModel on procedural shapes, procedural faces or Fashion-MNIST.

Recipe for fast convergence on a CPU: small channels at high resolution, min-SNR-gamma loss weighting, linear
warm-up then cosine decay, EMA weights, decoupled weight decay on weight matrices. The batch of step ``s`` is
drawn from seed ``seed + s``, so a resumed run sees exactly the data of an uninterrupted one. Checkpoints are
safetensors + JSON only.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from eigenedit.data import faces, faces_v2, fashion, shapes

DATASETS = {"shapes": 3, "fashion-mnist": 1, "faces": 3, "faces2": 3}  # name -> image channels


def default_unet_config(channels: int = 3) -> dict:
    """The shipped models: 4 levels (32->4 px), 16..128 channels, attention at the 4x4 level and mid-block."""
    return dict(
        sample_size=32,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=32,
        norm_num_groups=8,
    )


def faces_unet_config() -> dict:
    """faces64: ddpm-ema-celebahq-256's layout scaled down to 64 px: one attention layer (a single head) at
    16x16 in the down and up path, mid-block attention at 8x8 (h-space), 16..128 channels."""
    return dict(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=None,
        norm_num_groups=8,
    )


@dataclass
class TrainConfig:
    output_dir: str = "training/shapes32"
    dataset: str = "shapes"
    max_steps: int = 20000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 500
    weight_decay: float = 0.1
    ema_decay: float = 0.999
    snr_gamma: float = 5.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    num_threads: int = 2
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"  # v makes the UNet predict x0 at high noise, which needs its deep path
    bf16: bool = False  # bfloat16 autocast for the forward pass (about 2x faster on CPUs with avx512_bf16)
    unet: dict = field(default_factory=default_unet_config)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.dataset in ("faces", "faces2") and self.unet == default_unet_config():
            self.unet = faces_unet_config()
        channels = DATASETS[self.dataset]
        self.unet = {**self.unet, "in_channels": channels, "out_channels": channels}


def make_batch(cfg: TrainConfig, step: int) -> torch.Tensor:
    """The training images of one step; a function of (seed, step) only, so resumed runs see the same data."""
    seed = cfg.seed * 1_000_003 + step
    if cfg.dataset == "fashion-mnist":
        return fashion.make_batch(cfg.batch_size, seed)[0]
    if cfg.dataset == "faces":
        return faces.make_batch(cfg.batch_size, seed)[0]
    if cfg.dataset == "faces2":
        return faces_v2.make_batch(cfg.batch_size, seed)[0]
    return shapes.make_batch(cfg.batch_size, seed)[0]


def make_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def min_snr_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon targets,
    min(SNR, gamma) / (SNR + 1) for v targets."""
    abar = scheduler.alphas_cumprod[timesteps]
    snr = abar / (1 - abar)
    return torch.clamp(snr, max=gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


def make_optimizer(unet: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on matrices/kernels only (nanoGPT style): decay shrinks what the
    random initialisation left in the weights, so the learned structure dominates their spectra."""
    matrices = [p for p in unet.parameters() if p.ndim >= 2]
    others = [p for p in unet.parameters() if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = opt.state_dict()
    tensors = {
        f"{idx}.{name}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
        for idx, slots in state["state"].items()
        for name, value in slots.items()
    }
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: list) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": param_groups}


def save_checkpoint(path: Path, unet, ema, opt, step: int, cfg: TrainConfig, log: list) -> None:
    """Write unet/, unet_ema/, optimizer.safetensors and state.json; state.json goes last (commit marker)."""
    path.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(path / "unet")
    ema.save_pretrained(path / "unet_ema")
    tensors, groups = _flatten_optimizer(opt)
    save_file(tensors, path / "optimizer.safetensors")
    tmp = path / "state.json.tmp"
    tmp.write_text(json.dumps({"step": step, "config": asdict(cfg), "param_groups": groups, "log": log}))
    tmp.replace(path / "state.json")


def export_pipeline(checkpoint: Path, out_dir: Path) -> None:
    """Export the EMA UNet + DDPM scheduler as a diffusers DDPMPipeline folder (model_index.json, unet/, scheduler/)."""
    state = json.loads((checkpoint / "state.json").read_text())
    cfg = TrainConfig(**{"prediction_type": "epsilon", **state["config"]})  # older checkpoints: epsilon
    unet = UNet2DModel.from_pretrained(checkpoint / "unet_ema")
    scheduler = make_scheduler(cfg)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out_dir)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) until cfg.max_steps; returns the checkpoint folder. Uses cfg.num_threads threads
    (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig) -> Path:
    ckpt = Path(cfg.output_dir) / "checkpoint"
    scheduler = make_scheduler(cfg)
    if (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        saved_type = state["config"].get("prediction_type", "epsilon")
        if saved_type != cfg.prediction_type:
            raise ValueError(f"{ckpt} was trained with --prediction-type {saved_type}; pass the same to resume")
        if state["config"].get("dataset", "shapes") != cfg.dataset:
            raise ValueError(f"{ckpt} was trained on {state['config'].get('dataset', 'shapes')}, not {cfg.dataset}")
        unet = UNet2DModel.from_pretrained(ckpt / "unet")
        ema = UNet2DModel.from_pretrained(ckpt / "unet_ema")
        step, log = state["step"], state["log"]
        opt = make_optimizer(unet, cfg)
        opt.load_state_dict(_unflatten_optimizer(load_file(ckpt / "optimizer.safetensors"), state["param_groups"]))
        opt.param_groups[0]["weight_decay"] = cfg.weight_decay  # the command line wins over the checkpoint
        print(f"resumed from {ckpt} at step {step}", flush=True)
    else:
        torch.manual_seed(cfg.seed)
        unet = UNet2DModel(**cfg.unet)
        ema = copy.deepcopy(unet)
        step, log = 0, []
        opt = make_optimizer(unet, cfg)
        save_checkpoint(Path(cfg.output_dir) / "init", unet, ema, opt, 0, cfg, [])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # data and noise stay CPU-seeded
    unet.to(device)
    ema.to(device).requires_grad_(False)
    unet.train()
    t0, losses = time.time(), []
    while step < cfg.max_steps:
        x0 = make_batch(cfg, step)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + 10**9)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g)
        xt = scheduler.add_noise(x0, noise, t).to(device)
        target = scheduler.get_velocity(x0, noise, t) if cfg.prediction_type == "v_prediction" else noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            prediction = unet(xt, t.to(device)).sample.float()
        per_sample = (prediction - target.to(device)).pow(2).mean((1, 2, 3))
        weights = min_snr_weights(scheduler, t, cfg.snr_gamma, cfg.prediction_type).to(device)
        loss = (per_sample * weights).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step += 1
        losses.append(loss.item())
        if step % cfg.log_every == 0:
            rate = len(losses) / (time.time() - t0)
            entry = {"step": step, "loss": sum(losses) / len(losses), "lr": lr_at(step, cfg), "steps_per_s": rate}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            t0, losses = time.time(), []
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint(ckpt, unet, ema, opt, step, cfg, log)
    return ckpt


def main(argv: list[str] | None = None) -> None:
    """``python -m eigenedit.training --max-steps 20000 --output-dir training/shapes32`` (resumes if possible)."""
    import argparse

    parser = argparse.ArgumentParser(prog="eigenedit train", description=main.__doc__)
    for f in TrainConfig.__dataclass_fields__.values():
        if f.name != "unet":
            kind = type(f.default)
            if kind is bool:
                parser.add_argument(
                    "--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=f.default
                )
            else:
                parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    parser.add_argument("--export", type=Path, default=None, help="after training, export a pipeline folder here")
    args = vars(parser.parse_args(argv))
    export = args.pop("export")
    ckpt = train(TrainConfig(**args))
    if export is not None:
        export_pipeline(ckpt, export)
        print(f"exported pipeline to {export}", flush=True)


if __name__ == "__main__":
    main()
