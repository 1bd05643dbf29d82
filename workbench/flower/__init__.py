"""Run the workbench's algorithms on Flower (`pip install -e .[flower]`).

`client_app.app` and `server_app.app` are a Flower ClientApp and ServerApp built from the same
algorithm hooks, config, sampling, seeds and accounting as `workbench.loop`; Flower only
carries the payloads. `local.simulate` runs them on Flower's simulation engine; docs/flower.md
shows the deployment (SuperLink + SuperNodes with TLS).
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "workbench.flower needs Flower: install it with `pip install -e .[flower]` (flwr[simulation])"
    ) from error
