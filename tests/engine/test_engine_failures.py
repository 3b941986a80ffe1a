"""Client failures in `run_federated`: they stop the run by default (`ClientFailureError`), are
dropped and recorded with ``tolerate_client_failures``, and survive checkpoint/resume."""

import json

import pytest
import torch

from federated_core.engine import ClientFailureError, FederatedConfig, WireLog, run_federated
from federated_core.engine.messages import SERVER
from federated_core.methods.fedpe import FedPE

from engine_helpers import tiny_config


class FlakyFedPE(FedPE):
    """FedPE whose clients ``(client, round)`` in ``fail`` raise, and in ``nan`` upload NaNs."""

    def __init__(self, fail=(), nan=()):
        super().__init__()
        self.fail, self.nan = set(fail), set(nan)
        self.name = "fedpe-flaky"

    def client_update(self, phase, client_state, broadcast, data, rng):
        key = (client_state.meta["client_id"], client_state.meta["round"])
        if key in self.fail:
            raise OSError(f"disk full on {key}")
        state, uploads = super().client_update(phase, client_state, broadcast, data, rng)
        if key in self.nan:
            uploads[0].tensors["embedding.bias"][0] = float("nan")
        return state, uploads


def test_a_failing_client_stops_the_run_by_default(clients, tmp_path):
    with pytest.raises(ClientFailureError) as info:
        run_federated(tiny_config(rounds=3), clients, tmp_path, method=FlakyFedPE(fail={(2, 2)}))
    err = info.value
    assert (err.client, err.round, err.phase) == (2, 2, "train")
    assert isinstance(err.__cause__, OSError) and err.error is err.__cause__
    assert "client:2 failed in round 2 phase 'train': OSError: disk full on (2, 2)" in str(err)
    assert isinstance(err, RuntimeError)
    # the checkpoint of round 1 is the last one written
    assert json.loads((tmp_path / "state" / "progress.json").read_text())["completed_rounds"] == 1


def test_a_protocol_breaking_client_is_a_client_failure(clients):
    class WrongSender(FedPE):
        def client_update(self, phase, client_state, broadcast, data, rng):
            state, uploads = super().client_update(phase, client_state, broadcast, data, rng)
            return state, uploads[0]  # not a list

    method = WrongSender()
    method.name = "fedpe-wrong"
    with pytest.raises(ClientFailureError, match=r"client:0 failed in round 1 phase 'train': TypeError"):
        run_federated(tiny_config(rounds=1), clients, method=method)


def test_tolerated_failures_are_recorded_per_round_and_in_total(clients, tmp_path):
    config = tiny_config(rounds=3, tolerate_client_failures=True)
    result = run_federated(config, clients, tmp_path, method=FlakyFedPE(fail={(1, 1), (3, 1), (1, 3)}))
    rounds = result.metrics["rounds"]
    assert rounds[0]["failed"] == [
        {"client": 1, "phase": "train", "error": "OSError: disk full on (1, 1)"},
        {"client": 3, "phase": "train", "error": "OSError: disk full on (3, 1)"},
    ]
    assert rounds[1]["failed"] == [] and rounds[2]["failed"][0]["client"] == 1
    assert [r["participants"] for r in rounds] == [[0, 2], [0, 1, 2, 3], [0, 2, 3]]
    summary = {"count": 3, "rounds": {"1": [1, 3], "3": [1]}}
    assert result.metrics["client_failures"] == summary
    assert json.loads((tmp_path / "metrics.json").read_text())["client_failures"] == summary
    senders = sorted({m.sender for m in result.wire if m.round == 1 and m.sender != SERVER})
    assert senders == ["client:0", "client:2"]


def test_resume_with_failures_and_rejections_gives_the_uninterrupted_result(clients, tmp_path):
    kwargs = dict(rounds=3, tolerate_client_failures=True)
    flaky = dict(fail={(1, 2)}, nan={(2, 3), (0, 1)})
    full = run_federated(tiny_config(**kwargs), clients, tmp_path / "full", method=FlakyFedPE(**flaky))
    run_federated(tiny_config(**kwargs), clients, tmp_path / "split", method=FlakyFedPE(**flaky), stop_after=2)
    resumed = run_federated(tiny_config(**kwargs), clients, tmp_path / "split", method=FlakyFedPE(**flaky), resume=True)
    assert full.metrics["client_failures"] == resumed.metrics["client_failures"] == {"count": 1, "rounds": {"2": [1]}}
    strip = lambda ms: [{k: v for k, v in r.items() if k != "seconds"} for r in ms["rounds"]]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)
    assert [len(r["rejected"]) for r in full.metrics["rounds"]] == [1, 0, 1]
    for name, value in full.backbone.state_dict().items():
        assert torch.equal(value, resumed.backbone.state_dict()[name])
    w_full, w_split = WireLog.load(tmp_path / "full"), WireLog.load(tmp_path / "split")
    assert w_full.rejections() == w_split.rejections() and len(w_full.rejections()) == 2
    assert all(resumed.metrics["rounds"][i]["seconds"]["round"] > 0 for i in range(3))


def test_tolerate_client_failures_config_field():
    config = tiny_config(tolerate_client_failures=True)
    assert config.to_dict()["tolerate_client_failures"] is True
    assert FederatedConfig.from_dict(config.to_dict()) == config
    assert FederatedConfig().tolerate_client_failures is False
    with pytest.raises(ValueError, match="tolerate_client_failures must be True or False, got 1"):
        FederatedConfig(tolerate_client_failures=1)
