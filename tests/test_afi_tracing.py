"""Every registered model goes through the tools people bring: ``torch.export`` (dynamic batch),
``torch.jit.trace``, ``torch.fx.symbolic_trace`` and ``torch.compile(fullgraph=True)``, with
outputs equal to eager. AFI blocks take the plain path under each of them without being told."""

import warnings

import pytest
import torch
from reference import assert_close_scaled
from zoo import COVERED_BY, representatives, structure

from afictl.models import create_model, get_model_info, list_models

#: the CIFAR ResNets, plain and AFI, in the quick run; the other structures (the
#: 224-pixel ImageNet ones, up to 20 s each on two cores) are marked slow; deeper copies of a
#: structure are covered by their shallowest sibling (tests/zoo.py)
QUICK = {"resnet20", "afi_resnet20"}


def _params(names):
    return [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _model_and_input(name, batch=2):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).double().eval()
    size = 32 if get_model_info(name).input_size == 32 else 64
    return model, torch.randn(batch, 3, size, size, dtype=torch.float64)


@pytest.mark.parametrize("name", _params(representatives()))
def test_export_jit_trace_and_fx_equal_eager(name):
    model, x = _model_and_input(name)
    x3 = torch.randn(3, *x.shape[1:], dtype=x.dtype)
    with torch.no_grad():
        eager, eager3 = model(x), model(x3)
        exported = torch.export.export(
            model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
        )
        assert_close_scaled(exported.module()(x3), eager3, 1e-10, "torch.export, batch 3")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(model, (x,))
        assert_close_scaled(traced(x), eager, 1e-10, "torch.jit.trace")
        graph = torch.fx.symbolic_trace(model)
        assert_close_scaled(graph(x3), eager3, 1e-10, "torch.fx")


def test_training_graphs_trace_too():
    """Tracers see the plain path also with gradients on (where eager takes the stage buffer)."""
    model, x = _model_and_input("afi_resnet20")
    model.train()
    graph = torch.fx.symbolic_trace(model)
    assert not any("Function" in str(n.target) for n in graph.graph.nodes)
    out = graph(x)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name",
    [
        "afi_resnet20",
        pytest.param("afi_mobilenetv2", marks=pytest.mark.slow),
        pytest.param("afi_shufflenetv2", marks=pytest.mark.slow),
        pytest.param("afi_resnext29_32x4d", marks=pytest.mark.slow),
    ],
)
def test_compile_fullgraph_makes_one_graph(name):
    """dynamo captures the whole model in one graph (``fullgraph=True`` fails on any break);
    the eager backend runs that graph as captured, which is what this checks (inductor's code
    generation takes minutes here; docs/PERFORMANCE.md records its speed)."""
    torch._dynamo.reset()
    model, x = _model_and_input(name)
    compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        assert_close_scaled(compiled(x), model(x), 1e-10)
    model.train()
    out = compiled(x)  # training mode: one graph too, gradients through it
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_representatives_cover_the_zoo():
    """Each model left out of the whole-model tests has its stand-in's exact structure, and
    every other registered model is a representative."""
    assert set(COVERED_BY) <= set(list_models())
    for name, stand_in in COVERED_BY.items():
        assert structure(name) == structure(stand_in), name
    shapes = [structure(n) for n in representatives()]
    assert len(shapes) == len(set(shapes))  # no two representatives share a structure
