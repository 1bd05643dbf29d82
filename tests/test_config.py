import pytest

from workbench.config import ConfigError, RunConfig, build_config, defaults

ALGORITHMS = RunConfig.__dataclass_fields__["algorithm"].metadata["choices"]()


@pytest.mark.parametrize(
    "flat, fragment",
    [
        ({"rank": 0}, "rank=0"),
        ({"rank": 11}, "rank=11"),
        ({"dataset": "cifar100", "rank": 101}, "rank=101"),
        ({"mu": -0.1}, "mu=-0.1"),
        ({"mu": 1.01}, "mu=1.01"),
        ({"fraction": 0.0}, "fraction=0.0"),
        ({"fraction": 1.5}, "fraction=1.5"),
        ({"classes_per_client": 11}, "classes_per_client=11"),
        ({"dataset": "mnist"}, "dataset='mnist'"),
        ({"models": "cnn1,resnet50"}, "models='resnet50'"),
        ({"algorithm": "fedsgd"}, "algorithm='fedsgd'"),
        ({"rounds": 0}, "rounds=0"),
        ({"model_epochs": 0}, "model_epochs=0"),
        ({"adapter_epochs": -1}, "adapter_epochs=-1"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"adapter_lr": -0.01}, "adapter_lr=-0.01"),
        ({"partition": "iid-ish"}, "partition='iid-ish'"),
        ({"dirichlet_alpha": 0}, "dirichlet_alpha=0"),
        ({"num_clients": 0}, "num_clients=0"),
        ({"rank": 2.5}, "rank=2.5"),
        ({"rank": "four"}, "rank='four'"),
        ({"download": "maybe"}, "download='maybe'"),
        ({"lr": float("nan")}, "lr=nan"),
    ],
)
def test_bad_values_are_refused_naming_parameter_and_value(flat, fragment):
    with pytest.raises(ConfigError) as error:
        build_config(flat)
    assert fragment in str(error.value)


def test_unknown_name_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'rnak' \(did you mean 'rank'\?\)"):
        build_config({"rnak": 4})


def test_heterogeneous_adapter_target_is_refused_naming_layer_and_shapes():
    with pytest.raises(ConfigError, match=r"'fc2'.*cnn1: 2000→500.*cnn3: 1000→500"):
        build_config({"lora_targets": "fc2"})
    # homogeneous when every client has the same architecture
    build_config({"lora_targets": "fc2", "models": "cnn3", "rank": 16})


def test_strings_from_the_command_line_are_coerced():
    config = build_config({"rank": "8", "mu": "0.25", "download": "false", "models": "cnn1,cnn5"})
    assert (config.params_of("fedlora").rank, config.params_of("fedlora").mu) == (8, 0.25)
    assert config.data.download is False and config.federation.models == ("cnn1", "cnn5")


def test_flat_round_trip_and_frozen():
    config = build_config({"rank": 6, "fd_weight": 0.3, "algorithm": "fd"})
    assert build_config(config.to_flat()) == config
    assert config.params_of("fd").weight == 0.3
    with pytest.raises(AttributeError):
        config.params_of("fedlora").rank = 3
    assert set(defaults()) == set(config.to_flat())


def test_round_robin_models_and_fedavg_single_architecture():
    config = build_config({"num_clients": 7})
    assert config.client_models() == ["cnn1", "cnn2", "cnn3", "cnn4", "cnn5", "cnn1", "cnn2"]
    assert set(build_config({"algorithm": "fedavg", "fedavg_model": "cnn3"}).client_models()) == {"cnn3"}


def test_algorithm_names_match_registry():
    from workbench.algorithms import REGISTRY

    assert set(REGISTRY) <= set(ALGORITHMS)
