import torch
from helpers import make_algorithm

from workbench.algorithms.fedlora.adapters import (
    adapter_parameters,
    adapter_state,
    load_adapter_state,
    private_parameters,
)


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def set_random_adapter(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    load_adapter_state(
        model, {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in adapter_state(model).items()}
    )


def test_adapter_phase_leaves_every_model_tensor_bit_identical():
    algorithm, (client,) = make_algorithm(num_clients=1)
    model = client.state["model"]
    set_random_adapter(model)
    private, shared = snapshot(private_parameters(model)), snapshot(adapter_parameters(model).values())
    algorithm.train_adapter(client, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(private, private_parameters(model)))
    assert not all(torch.equal(a, b) for a, b in zip(shared, adapter_parameters(model).values()))


def test_model_phase_leaves_every_adapter_tensor_bit_identical():
    algorithm, (client,) = make_algorithm(num_clients=1, mu=0.5)
    model = client.state["model"]
    set_random_adapter(model)
    private, shared = snapshot(private_parameters(model)), snapshot(adapter_parameters(model).values())
    algorithm.train_model(client, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(shared, adapter_parameters(model).values()))
    assert not all(torch.equal(a, b) for a, b in zip(private, private_parameters(model)))


def model_grads(algorithm, model, x, y):
    for p in model.parameters():
        p.grad = None
    algorithm.model_loss(model)(x, y).backward()
    return [p.grad.clone() for p in private_parameters(model)]


def test_mu_zero_makes_phase_one_gradients_independent_of_the_adapter():
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    for mu, independent in ((0.0, True), (0.5, False)):
        algorithm, (client,) = make_algorithm(num_clients=1, mu=mu)
        model = client.state["model"]
        set_random_adapter(model, seed=1)
        first = model_grads(algorithm, model, x, y)
        set_random_adapter(model, seed=2)
        second = model_grads(algorithm, model, x, y)
        same = all(torch.equal(a, b) for a, b in zip(first, second))
        assert same is independent, f"mu={mu}"


def test_mixed_loss_equals_its_definition():
    algorithm, (client,) = make_algorithm(num_clients=1, mu=0.3)
    model = client.state["model"]
    set_random_adapter(model)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6)
    z = model.features(x)
    ce = torch.nn.functional.cross_entropy
    expected = 0.7 * ce(model.head.get_base_layer()(z), y) + 0.3 * ce(model(x), y)
    torch.testing.assert_close(algorithm.model_loss(model)(x, y), expected)


def test_upload_is_the_adapter_and_receive_loads_it_exactly():
    algorithm, clients = make_algorithm(num_clients=2)
    set_random_adapter(clients[0].state["model"])
    payload = algorithm.upload(clients[0])
    assert set(payload) == {"head.lora_A", "head.lora_B"}
    algorithm.receive(clients[1], payload)
    assert all(torch.equal(adapter_state(clients[1].state["model"])[k], v) for k, v in payload.items())


def test_every_client_and_the_server_start_from_the_same_adapter():
    algorithm, clients = make_algorithm(num_clients=3)
    server = algorithm.initial_server_state()
    assert server["head.lora_B"].std().item() > 0  # the default small random B (adapter_init=small_b)
    for c in clients:
        assert all(torch.equal(adapter_state(c.state["model"])[k], v) for k, v in server.items())


def test_no_gradients_are_kept_after_local_training():
    algorithm, (client,) = make_algorithm(num_clients=1)
    algorithm.local_update(client, torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in client.state["model"].parameters())
