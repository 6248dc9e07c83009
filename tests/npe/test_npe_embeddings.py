"""Embedding networks: shapes, permutation invariance, custom modules."""

from __future__ import annotations

import pytest
import torch
from npe_models import iid_model

import flowinfer as fi
from flowinfer.npe.embeddings import (
    ConvEmbedding,
    DeepSetEmbedding,
    GRUEmbedding,
    build_embedding,
    check_embedding,
)

SMALL = {"num_layers": 2, "hidden": (16,)}


@pytest.mark.parametrize("kind, shape", [("mlp", (4, 2)), ("deepset", (7, 3)),
                                         ("deepset", (7,)), ("conv", (30,)),
                                         ("conv", (30, 2)), ("gru", (12, 2)),
                                         ("identity", (5,))])
def test_named_embeddings_map_batches_to_vectors(kind, shape):
    net = build_embedding(kind, shape)
    assert check_embedding(net, shape) == net.out_features
    assert net(torch.randn(3, *shape)).shape == (3, net.out_features)


def test_sequence_embeddings_need_sequence_data():
    with pytest.raises(ValueError, match="trials_or_time"):
        build_embedding("conv", (2, 3, 4))


def test_deepset_is_permutation_invariant_alone():
    torch.manual_seed(0)
    net = DeepSetEmbedding(features=2)
    x = torch.randn(5, 9, 2)
    perm = torch.randperm(9)
    assert torch.allclose(net(x), net(x[:, perm]), atol=1e-6)


def test_order_matters_for_time_series_embeddings():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 1)
    for net in (ConvEmbedding(1), GRUEmbedding(1)):
        assert not torch.allclose(net(x), net(x.flip(1)))


def test_npe_with_deepset_is_permutation_invariant():
    npe = fi.NPE(iid_model, "x", embedding="deepset", flow_options=SMALL)
    npe.fit(num_simulations=300, epochs=3, seed=0, progress=False)
    x = npe.simulations.observed["x"][0]
    values = {"mu": torch.linspace(-2, 2, 7), "scale": torch.linspace(0.5, 2, 7)}
    a = npe.log_prob(values, x=x)
    b = npe.log_prob(values, x=x[torch.randperm(6)])
    assert torch.allclose(a, b, atol=1e-5)
    # The MLP default is not invariant: the same check must be able to fail.
    mlp = fi.NPE(iid_model, "x", flow_options=SMALL)
    mlp.fit(num_simulations=300, epochs=3, seed=0, progress=False)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    assert not torch.allclose(mlp.log_prob(values, x=x), mlp.log_prob(values, x=x[perm]),
                              atol=1e-5)


def test_custom_module_is_trained_jointly():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    before = net[1].weight.detach().clone()
    npe = fi.NPE(iid_model, "x", embedding=net, flow_options=SMALL)
    npe.fit(num_simulations=200, epochs=2, seed=0, progress=False)
    assert npe.flow.context_dim == 4
    assert not torch.equal(net[1].weight, before)


def test_mlp_embedding_passes_the_data_beside_its_features():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2)
    net = build_embedding("mlp", (4, 2))
    out = net(x)
    assert net.out_features == 8 + 32 == out.shape[1]
    assert torch.equal(out[:, :8], x.reshape(3, 8))
    plain = build_embedding("mlp", (4, 2), skip=False)
    assert plain.out_features == 32 == plain(x).shape[1]


def test_saved_npe_keeps_its_embedding_layout(tmp_path):
    npe = fi.NPE(iid_model, "x", embedding_options={"skip": False}, flow_options=SMALL,
                 replicates=1)
    npe.fit(num_simulations=200, epochs=1, seed=0, progress=False)
    fi.save(npe, tmp_path / "npe.pt")
    back = fi.load(tmp_path / "npe.pt", model=iid_model)
    assert back.flow.context_dim == npe.flow.context_dim == 32
    x = npe.simulations.observed["x"][0]
    values = {"mu": torch.zeros(2), "scale": torch.ones(2)}
    assert torch.allclose(back.log_prob(values, x=x), npe.log_prob(values, x=x))


def test_auto_embedding_keeps_the_candidate_with_the_lower_validation_loss():
    npe = fi.NPE(iid_model, "x", flow_options=SMALL, combine="best", standardize="prior")
    assert npe.selection is None
    npe.fit(num_simulations=300, epochs=3, seed=0, progress=False)
    sel = npe.selection
    # Two independently initialised copies of each candidate by default.
    assert sel["candidates"] == ["mlp(skip=True)", "mlp(skip=False)", "mlp(skip=True)#2",
                                 "mlp(skip=False)#2"]
    losses = sel["val_loss"]
    best = min(range(4), key=losses.__getitem__)
    assert sel["chosen"] == sel["candidates"][best]
    assert npe.embedding_options["skip"] == (best % 2 == 0)
    assert npe.results == [sel["results"][best]]
    assert npe.flow.context_dim == npe.embedding.out_features
    # A second call trains the chosen estimator only.
    npe.fit(num_simulations=100, epochs=1, seed=1, progress=False)
    assert len(npe.results) == 2 and npe.selection is sel


def test_auto_embedding_with_skip_given_trains_that_candidate_only():
    npe = fi.NPE(iid_model, "x", embedding_options={"skip": False, "out_features": 8},
                 flow_options=SMALL, replicates=1)
    npe.fit(num_simulations=200, epochs=1, seed=0, progress=False)
    assert npe.selection is None and npe.flow.context_dim == 8
    # By default its two copies start from different weights and are mixed (here both on
    # the prior's scale; by default the second is a regressed member, test_npe_regressed.py).
    npe = fi.NPE(iid_model, "x", embedding_options={"skip": False, "out_features": 8},
                 flow_options=SMALL, standardize="prior")
    first, second = (c.embedding for c in npe._candidates)
    assert not torch.equal(first.net[0].weight, second.net[0].weight)
    npe.fit(num_simulations=200, epochs=1, seed=0, progress=False)
    assert npe.selection["candidates"] == ["mlp(skip=False, out_features=8)",
                                           "mlp(skip=False, out_features=8)#2"]
    assert npe.selection["chosen"] == "mixture" and npe.flow.context_dim == 16


def test_replicates_of_a_named_embedding_and_bad_values():
    npe = fi.NPE(iid_model, "x", embedding="mlp", flow_options=SMALL, replicates=3,
                 standardize="prior")
    assert [c.label for c in npe._candidates] == ["mlp()", "mlp()#2", "mlp()#3"]
    # With two copies or more the default regresses every second one.
    npe = fi.NPE(iid_model, "x", embedding="mlp", flow_options=SMALL, replicates=3)
    assert npe.standardize == "mixed"
    assert [c.label for c in npe._candidates] == ["mlp()", "mlp()#2 regressed", "mlp()#3"]
    assert len(fi.NPE(iid_model, "x", embedding="mlp", flow_options=SMALL)._candidates) == 1
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    with pytest.raises(ValueError, match="replicates=2 needs a named embedding"):
        fi.NPE(iid_model, "x", embedding=net, replicates=2)
    for bad in (0, 1.5, "2"):
        with pytest.raises((TypeError, ValueError), match="replicates"):
            fi.NPE(iid_model, "x", replicates=bad)
