"""Safe defaults, checked on a real embedded Ray and real files (not by reading our own config)."""

import urllib.error
import urllib.request

import pytest

from distill.config import RayConfig

pytestmark = pytest.mark.ray


def test_embedded_ray_has_token_auth_and_a_loopback_dashboard():
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    from distill.cluster.session import ray_session

    with ray_session(RayConfig(num_cpus=2, dashboard=True)) as ray:
        assert is_token_auth_enabled(), "Ray token authentication must stay on"
        url = ray._private.worker.get_dashboard_url()
        assert url.split(":")[0] == "127.0.0.1", url
        with pytest.raises(urllib.error.HTTPError) as e:  # no token: refused
            urllib.request.urlopen(f"http://{url}/api/jobs/", timeout=30)
        assert e.value.code in (401, 403)


def test_trainer_state_is_never_unpickled(tiny_model, tmp_path):
    """A trainer_state.pt carrying arbitrary Python objects is refused (torch.load weights_only=True)."""
    import pickle

    import torch

    from distill.actors.student import POSITION_FILE, STATE_FILE, StudentStep
    from distill.config import load_config

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"optimizer": Payload(), "scheduler": {}}, tmp_path / STATE_FILE)
    (tmp_path / POSITION_FILE).write_text(
        '{"epoch": 1, "epoch_done": false, "batches": 0, "trained_ids": [], "steps": 0}'
    )
    cfg = load_config("smoke")
    student = StudentStep(cfg.train, cfg.prompt, tiny_model)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        student.load_state(str(tmp_path))
