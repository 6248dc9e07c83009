"""torch.compile: flows trace as one graph (no graph breaks) and compiled results match eager.

`torch._dynamo.explain` reports every graph break with its reason; a flow that compiles as one
graph lets inductor fuse the element transforms (the spline arithmetic is dozens of small
elementwise kernels in eager mode). The default tests use the cheap `aot_eager` backend (it
traces forward and backward without generating code); the inductor check is marked slow.
"""

from __future__ import annotations

import pytest
import torch

import flowinfer as fi

DIM = 3
# Flows whose own code is ours. Pyro's BlockAutoregressive (bnaf) calls `nonzero`, whose
# output shape depends on the data: a graph break inside Pyro, not checked here.
FLOWS = {
    "realnvp": {},
    "nsf": {"bins": 4},
    "maf": {},
    "iaf": {},
    "nsf-ar": {"bins": 4},
    "nsf-ar-iaf": {"bins": 4, "direction": "iaf"},
    "glow": {},
    "householder": {},
}


def _flow(name: str, context_dim: int = 0) -> fi.Flow:
    torch.manual_seed(0)
    hyper = dict(FLOWS[name])
    registry_name = "nsf-ar" if name.startswith("nsf-ar") else name
    if name != "householder":
        hyper.update(num_layers=2, hidden=(8,))
    flow = fi.build_flow(registry_name, dim=DIM, context_dim=context_dim, **hyper)
    # Away from the identity, so that the comparisons below are not trivially equal.
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


def _assert_one_graph(fn, *args) -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    reasons = [b.reason for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", list(FLOWS))
def test_log_prob_and_sampling_have_no_graph_breaks(name):
    flow = _flow(name)
    x = torch.randn(16, DIM)
    _assert_one_graph(flow.log_prob, x)
    _assert_one_graph(lambda: flow.rsample((16,)))
    _assert_one_graph(lambda: flow.rsample_and_log_prob((16,)))
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["nsf", "maf"])
def test_conditional_flows_have_no_graph_breaks(name):
    flow = _flow(name, context_dim=2)
    x, context = torch.randn(16, DIM), torch.randn(16, 2)
    _assert_one_graph(flow.log_prob, x, context)
    _assert_one_graph(lambda: flow.rsample_and_log_prob((), context))
    torch._dynamo.reset()


def test_actnorm_keeps_data_dependent_start_and_compiles_after_it():
    # ActNorm branches on a Python mirror of its `initialized` buffer (a tensor branch would
    # break the graph); the mirror must follow the buffer through loading.
    flow = _flow("glow")
    data = 3.0 + 2.0 * torch.randn(256, DIM)
    flow.log_prob(data)
    fresh = fi.build_flow("glow", dim=DIM, num_layers=2, hidden=(8,))
    fresh.load_state_dict(flow.state_dict())
    torch.testing.assert_close(fresh.log_prob(data[:8]), flow.log_prob(data[:8]))
    _assert_one_graph(fresh.log_prob, data[:8])
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["nsf", "maf", "iaf"])
def test_compiled_matches_eager_with_gradients(name):
    flow = _flow(name)
    x = torch.randn(32, DIM)
    torch._dynamo.reset()
    compiled = torch.compile(flow.log_prob, fullgraph=True, backend="aot_eager")
    want = flow.log_prob(x)
    want_grads = torch.autograd.grad(want.sum(), list(flow.parameters()))
    got = compiled(x)
    got_grads = torch.autograd.grad(got.sum(), list(flow.parameters()))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nsf", "iaf"])
def test_inductor_training_step_matches_eager(name):
    # Inductor generates and compiles C++ for forward and backward: tens of seconds on CPU.
    eager, compiled_flow = _flow(name), _flow(name)
    compiled = torch.compile(compiled_flow.rsample_and_log_prob, fullgraph=True)
    torch._dynamo.reset()
    for flow, fn in ((eager, eager.rsample_and_log_prob), (compiled_flow, compiled)):
        torch.manual_seed(1)
        y, log_q = fn((64,))
        loss = (log_q + 0.5 * y.pow(2).sum(-1)).mean()
        flow.zero_grad()
        loss.backward()
        flow.result = (y.detach(), log_q.detach(), [p.grad for p in flow.parameters()])
    for got, want in zip(compiled_flow.result[:2], eager.result[:2], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for got, want in zip(compiled_flow.result[2], eager.result[2], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch._dynamo.reset()


def test_image_glow_compiles_as_one_graph_after_its_data_dependent_start():
    flow = fi.build_flow("glow", shape=(1, 4, 4), levels=1, steps_per_level=1,
                         hidden_channels=4)
    images = torch.rand(32, 1, 4, 4)
    flow.log_prob(images)  # ActNorm's data-dependent start happens eagerly, once
    _assert_one_graph(flow.log_prob, images[:8])
    _assert_one_graph(lambda: flow.rsample((8,)))
    torch._dynamo.reset()
