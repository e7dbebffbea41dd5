"""Edit operators (shift, scale, spectral, xspace) on tiny random UNets, and SeFa's normalisation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from eigenedit.core import operators, sampling
from eigenedit.core.attention import AttentionWeights
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import factorize
from eigenedit.models import DiffusionModel
from eigenedit.models.adm import AttentionBlock

from .conftest import run, tiny_unet

LAYER = "mid_block.attentions.0"


def directions(model, decomposition="qk", k=2, layer=LAYER):
    return compute_directions(model.unet, layer, decomposition).top(k)


@pytest.mark.parametrize("operator", operators.OPERATORS)
def test_alpha_zero_is_identical_for_every_operator(tiny_model, operator):
    x = sampling.noise_from_seeds(tiny_model, [0, 1])
    plain = sampling.sample(tiny_model, x, 6)
    zero = sampling.edit_images(
        tiny_model, x, sampling.Edit(directions(tiny_model), torch.zeros(2, 2), t_edit=0, operator=operator), 6
    )
    assert torch.equal(plain, zero)
    # a batch where only the second row is edited leaves the first row as it was
    mixed = sampling.edit_images(
        tiny_model,
        x,
        sampling.Edit(directions(tiny_model), torch.tensor([[0.0, 0.0], [0.5, 0.0]]), t_edit=0, operator=operator),
        6,
    )
    assert torch.equal(mixed[0], plain[0])
    assert (mixed[1] - plain[1]).abs().max() > 1e-4


def test_unknown_operator_is_refused(tiny_model):
    with pytest.raises(ValueError, match="unknown operator 'twist'"):
        sampling.Edit(directions(tiny_model), torch.zeros(1, 2), operator="twist")


def test_the_registry_decides_every_operator_check(tiny_model, monkeypatch):
    """Edit, make_operator, the flow-model check and the default alphas all read ``REGISTRY``: an operator added
    there is built and used, and the facts it declares (no asymmetric process, no flow models) are enforced."""
    from eigenedit.core import defaults, flow
    from eigenedit.core.operators import registry

    built = []

    def build(model, dirs, alphas, location, cg_steps=0):
        built.append(location)
        return operators.HiddenShift(operators.get_module(model.unet, location), dirs.vectors, alphas)

    spec = registry.OperatorSpec("twist", (-3.0, 3.0), flow=False, asymmetric=False, build=build)
    monkeypatch.setitem(registry.REGISTRY, "twist", spec)
    dirs, x = directions(tiny_model), sampling.noise_from_seeds(tiny_model, [0])
    twisted = sampling.edit_images(
        tiny_model, x, sampling.Edit(dirs, torch.tensor([[0.5, 0.0]]), t_edit=0, operator="twist"), 2
    )
    shifted = sampling.edit_images(
        tiny_model, x, sampling.Edit(dirs, torch.tensor([[0.5, 0.0]]), t_edit=0, operator="shift"), 2
    )
    assert built == ["mid_block"] and torch.equal(twisted, shifted)  # its builder made a shift
    assert defaults.default_alphas({}, "twist") == [-3.0, 3.0]
    with pytest.raises(ValueError, match=r"edits the UNet \(shift, scale, spectral\), not twist"):
        sampling.Edit(dirs, torch.zeros(1, 2), asymmetric=True, operator="twist")

    class FlowModel:  # just enough of a flow-matching model to reach the operator check
        flow_matching = True
        device, dtype = torch.device("cpu"), torch.float32

        def set_timesteps(self, num_steps):
            return torch.tensor([])

    edit = sampling.Edit(dirs, torch.zeros(1, 2), operator="twist")
    with pytest.raises(ValueError, match="the twist operator is not supported yet on flow-matching models"):
        flow.sample(FlowModel(), x, 2, edit)
    for name, entry in registry.REGISTRY.items():
        assert defaults.default_alphas({}, name) == list(entry.default_alphas)
        if not entry.asymmetric:
            with pytest.raises(ValueError, match="--asymmetric needs"):
                sampling.Edit(dirs, torch.zeros(1, 2), asymmetric=True, operator=name)


def rank_one_model(kind: str) -> tuple[DiffusionModel, torch.Tensor]:
    """A tiny model whose mid-block attention has an exactly rank-one qk, ov or qkv matrix; returns its u."""
    model = DiffusionModel(tiny_unet(1), DDIMScheduler(num_train_timesteps=1000), "tiny")
    attn = model.unet.get_submodule(LAYER)
    g = torch.Generator().manual_seed(5)
    c, inner = attn.to_q.weight.shape[1], attn.to_q.weight.shape[0]
    u = torch.randn(c, generator=g)
    u, v = u / u.norm(), torch.randn(c, generator=g)
    with torch.no_grad():
        if kind == "qk":
            attn.to_q.weight.copy_(torch.outer(torch.randn(inner, generator=g), u))
            attn.to_k.weight.copy_(torch.outer(torch.randn(inner, generator=g), u))
            attn.to_q.bias.zero_()
            attn.to_k.bias.zero_()
        elif kind == "ov":
            attn.to_v.weight.copy_(torch.outer(torch.randn(inner, generator=g), v / v.norm()))
            attn.to_out[0].weight.copy_(torch.outer(u, torch.randn(inner, generator=g)))
        else:
            for proj in (attn.to_q, attn.to_k, attn.to_v):
                proj.weight.copy_(torch.outer(torch.randn(inner, generator=g), u))
    return model, u


@pytest.mark.parametrize(
    ("kind", "decomposition"), [("qk", "qk"), ("ov", "ov-left"), ("ov", "ov-right"), ("qkv", "qkv")]
)
def test_spectral_minus_one_removes_a_rank_one_mode(kind, decomposition):
    model, _ = rank_one_model(kind)
    dirs = compute_directions(model.unet, LAYER, decomposition).top(1)
    removed = copy.deepcopy(model)  # the explicit removal: the layer without that matrix
    attn = removed.unet.get_submodule(LAYER)
    with torch.no_grad():
        for proj in {"qk": [attn.to_q], "ov": [attn.to_v], "qkv": [attn.to_q, attn.to_k, attn.to_v]}[kind]:
            proj.weight.zero_()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor(500)
    with torch.no_grad():
        plain = model.predict_eps(x, t)
        expected = removed.predict_eps(x, t)
        with operators.make_operator(model, "spectral", dirs, torch.tensor([[-1.0], [-1.0]]), LAYER) as op:
            op.active = True
            edited = model.predict_eps(x, t)
        doubled = copy.deepcopy(model)  # +1 doubles the mode: twice the matrix
        attn = doubled.unet.get_submodule(LAYER)
        proj = {"qk": attn.to_q, "ov": attn.to_v, "qkv": None}[kind]
        if proj is not None:
            proj.weight.mul_(2)
            with operators.make_operator(model, "spectral", dirs, torch.tensor([[1.0], [1.0]]), LAYER) as op:
                op.active = True
                assert torch.allclose(model.predict_eps(x, t), doubled.predict_eps(x, t), atol=1e-4)
    assert (plain - expected).abs().max() > 1e-3  # the mode matters
    assert torch.allclose(edited, expected, atol=1e-5)
    assert model.unet.get_submodule(LAYER).processor is not operators.Spectral  # processor restored


class Wrapper(torch.nn.Module):
    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize("new_order", [False, True])
def test_spectral_on_adm_blocks_removes_the_ov_mode(new_order):
    torch.manual_seed(0)
    c, heads, d = 32, 2, 16
    net = Wrapper(AttentionBlock(c, num_heads=heads, use_new_attention_order=new_order)).eval()
    u, v = torch.randn(c), torch.randn(c)
    with torch.no_grad():  # rank-one W_o W_v: W_v = a v^T, W_o = u b^T, written into the fused qkv layout
        fused = net.block.qkv.weight.view(3 * c, c)
        legacy = (torch.arange(heads) * 3 * d)[:, None] + 2 * d + torch.arange(d)  # head h: rows q, k, v
        v_rows = (2 * c + torch.arange(c)) if new_order else legacy.flatten()
        fused[v_rows] = torch.outer(torch.randn(c), v)
        net.block.proj_out.weight.view(c, c).copy_(torch.outer(u, torch.randn(c)))
    dirs = compute_directions(net, "block", "ov-left").top(1)
    removed = copy.deepcopy(net)
    with torch.no_grad():
        removed.block.qkv.weight.view(3 * c, c)[v_rows] = 0
    x = torch.randn(2, c, 4, 4)
    model = DiffusionModel(net, None, "adm-block")
    with torch.no_grad(), operators.make_operator(model, "spectral", dirs, torch.tensor([[-1.0], [-1.0]]), "") as op:
        op.active = True
        edited = net(x)
        op.alphas = torch.zeros(2, 1)
        same = net(x)
    assert (net(x) - removed(x)).abs().max() > 1e-3
    assert torch.allclose(edited, removed(x), atol=1e-5)
    assert torch.equal(same, net(x))
    assert not net.block._forward_hooks


def test_spectral_refuses_non_attention_directions(tiny_model):
    pca = Directions(torch.eye(16)[:1], torch.ones(1), {"decomposition": "pca-h"})
    with pytest.raises(ValueError, match="spectral needs directions"):
        sampling.edit_images(
            tiny_model,
            torch.randn(1, 3, 16, 16),
            sampling.Edit(pca, torch.ones(1, 1), t_edit=0, operator="spectral"),
            2,
        )


def test_random_modes_keep_the_strengths_of_the_weight_modes(tiny_model):
    from eigenedit.core.attention import read_attention_weights

    weights = read_attention_weights(tiny_model.unet, LAYER)
    for decomposition in ("qk", "ov-left", "ov-right", "qkv"):
        dirs = directions(tiny_model, decomposition)
        control = operators.random_modes(dirs, weights, seed=3)
        real, rand = operators.layer_modes(dirs, weights), operators.layer_modes(control, weights)
        assert torch.allclose(real.strengths, rand.strengths)
        assert rand.left.shape == real.left.shape and rand.right.shape == real.right.shape
        assert (rand.left @ real.left.T).abs().max() < 0.99  # not the weight modes
        if decomposition == "ov-left":  # true singular triplets: the shares sum to the singular value
            assert torch.allclose(real.strengths.sum(1).float(), dirs.values, atol=1e-5)


def test_partners_survive_save_and_load_and_old_files_still_load(tmp_path, tiny_model):
    from eigenedit.core.attention import read_attention_weights

    dirs = directions(tiny_model, "ov-left", 3)
    control = operators.random_modes(dirs, read_attention_weights(tiny_model.unet, LAYER)).select([2, 0])
    control.save(tmp_path / "c.safetensors")
    back = Directions.load(tmp_path / "c.safetensors")
    assert (
        torch.equal(back.partners, control.partners) and back.metadata["head_values"] == control.metadata["head_values"]
    )
    dirs.save(tmp_path / "d.safetensors")  # no partners: the old format
    assert Directions.load(tmp_path / "d.safetensors").partners is None


def test_scale_leaves_a_state_without_the_direction_unchanged():
    n = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64))[0].T  # an orthonormal pair
    for shape in ((3, 6, 4, 5), (3, 20, 6)):
        h = torch.randn(shape, dtype=torch.float64)
        tokens = h.flatten(2).transpose(1, 2) if h.ndim == 4 else h
        tokens -= (tokens @ n.T) @ n  # no component along either direction
        assert torch.allclose(operators.scale_hidden(h, n, torch.tensor([[3.0, -2.0]] * 3)), h, atol=1e-12)
        h = torch.randn(shape, dtype=torch.float64)
        removed = operators.scale_hidden(h, n, -torch.ones(3, 2))  # alpha = -1 removes the component
        tokens = removed.flatten(2).transpose(1, 2) if h.ndim == 4 else removed
        assert (tokens @ n.T).abs().max() < 1e-12
        doubled = operators.scale_hidden(h, n[:1], torch.ones(3, 1)) - h  # alpha = 1 adds it once more
        delta = doubled.flatten(2).transpose(1, 2) if h.ndim == 4 else doubled
        original = h.flatten(2).transpose(1, 2) if h.ndim == 4 else h
        assert torch.allclose(delta, (original @ n[:1].double().T) @ n[:1].double())


def double_model() -> DiffusionModel:
    return DiffusionModel(tiny_unet(2).double(), DDIMScheduler(num_train_timesteps=1000), "tiny64")


def test_xspace_direction_matches_finite_differences_and_leaves_no_grad():
    model = double_model()
    dirs = compute_directions(model.unet, LAYER, "ov-left").top(1)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    alphas = torch.tensor([[1.0], [-2.0]])
    op = operators.XSpace(model, "mid_block", dirs.vectors, alphas)
    g = op.direction(x, 600)
    dx = torch.randn_like(x)
    eps = 1e-4
    with torch.no_grad():
        h_plus = operators.hidden_at(model, "mid_block", x + eps * dx, 600)
        h_minus = operators.hidden_at(model, "mid_block", x - eps * dx, 600)
        field = operators.direction_field(h_plus, dirs.vectors.double(), alphas.double())
    jdx = (h_plus - h_minus) / (2 * eps)  # J dx
    lhs, rhs = (g * dx).flatten(1).sum(1), (field * jdx).flatten(1).sum(1)  # <J^T U, dx> = <U, J dx>
    assert torch.allclose(lhs, rhs, rtol=1e-5)
    assert not g.requires_grad and g.grad_fn is None
    moved = op.move(x, 600)
    assert not moved.requires_grad
    step = (moved - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert torch.allclose(step, torch.tensor([1.0, 2.0], dtype=torch.float64))
    out = sampling.edit_images(
        model, x, sampling.Edit(dirs, alphas * 0.01, t_edit=500, location="mid_block", operator="xspace"), 4
    )
    assert not out.requires_grad and torch.is_grad_enabled()
    assert all(p.grad is None for p in model.unet.parameters())


def test_xspace_conjugate_gradients_reduce_the_residual():
    model = double_model()
    dirs = compute_directions(model.unet, LAYER, "qk").top(1)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    alphas = torch.tensor([[1.0]])

    def residual(steps: int) -> float:  # ||J g - U|| with J g by central differences
        g = operators.XSpace(model, "mid_block", dirs.vectors, alphas, cg_steps=steps).direction(x, 700)
        with torch.no_grad():
            plus = operators.hidden_at(model, "mid_block", x + 1e-4 * g, 700)
            minus = operators.hidden_at(model, "mid_block", x - 1e-4 * g, 700)
            field = operators.direction_field(plus, dirs.vectors.double(), alphas.double())
        return ((plus - minus) / 2e-4 - field).norm().item()

    one, three = residual(1), residual(3)
    assert three < one < 1.0  # ||U|| = 1: CG's first step is the best multiple of J^T U, later ones improve it


def test_qkv_is_sefa_factorize_weight():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(12, 6, generator=g, dtype=torch.float64) * torch.rand(12, 1, generator=g) for _ in "qkv")
    weights = AttentionWeights("layer", q, k, v, torch.randn(6, 12, generator=g, dtype=torch.float64), heads=2)
    values, vectors = factorize(weights, "qkv")
    # genforce/sefa utils.factorize_weight: weight = style.weight.T (in x out), columns to unit norm, eig(W W^T)
    weight = torch.cat([q, k, v]).numpy().T
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    eigen_values, eigen_vectors = np.linalg.eig(weight.dot(weight.T))
    order = np.argsort(-np.abs(eigen_values))
    expected_values, expected_vectors = eigen_values[order].real, eigen_vectors.T[order].real
    assert np.allclose(values.numpy(), expected_values)
    assert np.allclose(np.abs((vectors.numpy() * expected_vectors).sum(1)), 1.0)  # the same vectors up to sign
    a = torch.cat([q, k, v])
    raw = torch.linalg.eigvalsh(a.T @ a).flip(0)
    assert not np.allclose(raw.numpy(), expected_values)  # the normalisation matters here


# ------------------------------------------------------------------------------------------ command line, batch, UI


def test_cli_operator_option_and_model_default(model_dir, tmp_path, capsys):
    import json
    import shutil

    from PIL import Image

    grids = {}
    for operator in operators.OPERATORS:
        out = tmp_path / f"{operator}.png"
        args = ("sweep", "--model", model_dir, "-k", "1", "--steps", "2", "--t-edit", "0", "--operator", operator)
        assert run(*args, "-o", out) == 0
        assert f"operator {operator}:" in capsys.readouterr().out
        grids[operator] = np.asarray(Image.open(out))
    assert not np.array_equal(grids["shift"], grids["scale"]) and not np.array_equal(grids["shift"], grids["xspace"])
    folder = tmp_path / "model"  # a model whose eigenedit.json picks spectral (and so its alphas)
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps({"operator": "spectral", "alphas": [-1.0, 1.0]}))
    assert run("sweep", "--model", folder, "-k", "1", "--steps", "2", "-o", tmp_path / "d.png") == 0
    assert "operator spectral:" in capsys.readouterr().out
    assert Image.open(tmp_path / "d.png").width < Image.open(tmp_path / "shift.png").width  # 2 alphas, not 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--operator", "spectral", "--decomposition", "random"], "spectral needs directions of an attention"),
        (["--operator", "spectral", "--fold-norm"], "without --fold-norm"),
        (["--operator", "xspace", "--asymmetric"], "--asymmetric needs"),
        (["--operator", "twist"], "invalid choice"),
    ],
)
def test_cli_operator_errors_are_one_line_and_no_output(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.png"
    assert run("sweep", "--model", model_dir, "-k", "1", "--steps", "2", *args, "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].count(message) == 1
    assert not out.exists()


def test_batch_records_the_operator(model_dir, tmp_path):
    import json

    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "-k", "2", "-o", dfile) == 0
    out = tmp_path / "out"
    args = ("batch", "--model", model_dir, "--directions", dfile, "--steps", "2", "--seeds", "0", "-o", out)
    assert run(*args, "--direction", "0", "--operator", "scale") == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["operator"] for r in records} == {"scale"}
    assert [r["alphas"] for r in records] == [[a] for a in [-1.0, -0.5, 0.0, 0.5, 1.0]]  # scale's own defaults


def test_ui_renders_with_the_chosen_operator(tiny_model, tmp_path):
    from eigenedit.apps.ui import N_SLIDERS, EditorState, View

    state = EditorState(loader=lambda name: tiny_model, workdir=tmp_path)
    alphas = [0.8] + [0.0] * (N_SLIDERS - 1)
    edited = {
        op: state.render(View("tiny", steps=3, t_edit=0, operator=op), alphas).edited for op in ("shift", "scale")
    }
    assert not torch.equal(edited["shift"], edited["scale"])
    assert state.resolve(View("tiny")).operator == "shift"


def test_operator_cost_times_every_operator_against_plain_sampling(model_dir, tmp_path):
    import json

    from benchmarks import operator_cost

    out = tmp_path / "cost.json"
    operator_cost.main(["--model", model_dir, "--repeats", "1", "--batch", "2", "--out", str(out)])
    (entry,) = json.loads(out.read_text())["models"].values()
    assert set(entry["ratio"]) == {"plain", *operators.OPERATORS} and entry["ratio"]["plain"] == 1.0
    assert all(v > 0 for v in entry["seconds"].values()) and entry["batch"] == 2 and entry["repeats"] == 1
