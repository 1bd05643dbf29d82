import pytest
import torch

from workbench.core.models import build_model, count_parameters
from workbench.core.zoo import ZOO, linear_shapes


@pytest.mark.parametrize(
    "name, expected",
    [("cnn1", 2_621_558), ("cnn2", 1_815_142), ("cnn3", 1_320_558), ("cnn4", 1_060_358), ("cnn5", 670_058)],
)
def test_parameter_counts_match_the_paper_family(name, expected):
    assert count_parameters(build_model(name, 10, seed=0)) == expected


@pytest.mark.parametrize("name", sorted(ZOO))
def test_features_and_head_interface(name):
    model = build_model(name, 100, seed=0)
    x = torch.randn(3, 3, 32, 32)
    z = model.features(x)
    assert z.shape == (3, 500) and (z >= 0).all()
    assert torch.equal(model.head(z), model(x))
    shapes = {
        n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert shapes == linear_shapes(name, 100)


def test_seed_fixes_weights_without_touching_global_rng():
    state = torch.random.get_rng_state()
    a, b = build_model("cnn5", 10, seed=3), build_model("cnn5", 10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model("cnn5", 10, seed=4)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
