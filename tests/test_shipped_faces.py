"""The shipped faces64 model and its attribute probe load offline and do what the model card says."""

import torch

from eigenedit.core import sampling
from eigenedit.core.attention import list_attention_layers
from eigenedit.core.directions import compute_directions
from eigenedit.data import faces
from eigenedit.evaluation.probes import load_probe, probe_for_model
from eigenedit.models import SHIPPED_MODELS, load_model


def test_faces64_loads_offline_with_h_space_attention():
    model = load_model("faces64")
    assert model.sample_shape == (3, 64, 64) and model.prediction_type == "v_prediction"
    layers = {layer.name: layer for layer in list_attention_layers(model.unet)}
    assert layers["mid_block.attentions.0"].resolution == (8, 8)
    assert {layer.resolution for layer in layers.values()} == {(8, 8), (16, 16)}


def test_face_probe_reads_held_out_renders():
    probe = faces.FaceProbe.from_pretrained(SHIPPED_MODELS["faces64"] / "probe")
    scores = faces.probe_scores(probe, n=256)
    assert min(scores[f"{n}_r2"] for n in faces.CONTINUOUS) > 0.7, scores
    assert min(scores[f"{n}_accuracy"] for n in (*faces.BINARY, "hair_style")) > 0.95, scores


def test_samples_are_faces_on_flat_backgrounds():
    model = load_model("faces64")
    x = sampling.noise_from_seeds(model, [0, 1, 2, 3])
    images = sampling.sample(model, x, 10)
    assert torch.equal(images, sampling.sample(model, x, 10))  # deterministic from the seed
    corner = images[:, :, :8, :8].flatten(2).std(2).mean()
    noise_corner = x[:, :, :8, :8].clamp(-1, 1).flatten(2).std(2).mean()
    assert corner < 0.1 < noise_corner
    probe = probe_for_model("faces64")
    assert probe is not None and probe.name == "faces" and load_probe("faces").name == "faces"
    reads = probe(images)
    assert set(faces.ATTRIBUTES) <= set(reads) and all(torch.isfinite(v).all() for v in reads.values())
    assert probe.feature_vectors(images).shape == (4, 128)


def test_default_edit_moves_its_measured_label():
    """eigenedit.json's default edit (chosen by the protocol, ``evaluation.protocol_run``, on selection seeds) moves
    the attribute it is labelled with, in the labelled direction, on test seeds, at its 5 default strengths."""
    model = load_model("faces64")
    d = model.edit_defaults
    sign, name = (1.0 if d["label"][0] == "+" else -1.0), d["label"][1:]
    dirs = compute_directions(model.unet, d["layer"], d["decomposition"]).top(d["direction"] + 1)
    seeds = [1000, 1001, 1002, 1003]
    x = sampling.noise_from_seeds(model, seeds).repeat_interleave(5, dim=0)
    alphas = torch.zeros(len(x), len(dirs))
    alphas[:, d["direction"]] = torch.tensor(d["alphas"]).repeat(len(seeds))
    edit = sampling.Edit(dirs, alphas, t_edit=d["t_edit"], location=d["location"], operator=d["operator"])
    images = sampling.edit_images(model, x, edit, d["steps"])
    probe = probe_for_model("faces64")
    values = probe(images)[name].view(len(seeds), 5).double()
    change = probe.difference(name, values, values[:, d["alphas"].index(0.0)][:, None])  # circular hues wrap
    ranks = change.argsort(dim=1).argsort(dim=1).double()
    strength_ranks = torch.tensor(d["alphas"]).argsort().argsort().double()
    rho = torch.stack([torch.corrcoef(torch.stack([r, strength_ranks]))[0, 1] for r in ranks])
    assert float(rho.mean()) * sign > 0.5, (name, rho)
