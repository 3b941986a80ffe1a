"""torch's thread count: the cores this process may use by default, or --threads /
$PRIVAUDIT_THREADS; bad values are refused naming where they came from (CLI: exit 2)."""

from __future__ import annotations

import os

import pytest
import torch

from privaudit.cli import main
from privaudit.threads import ENV_VAR, available_cores, configure_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    torch.set_num_threads(before)


def test_default_is_the_affinity_mask():
    assert available_cores() == len(os.sched_getaffinity(0))
    assert configure_threads() == available_cores() == torch.get_num_threads()


def test_flag_then_environment(monkeypatch):
    assert configure_threads(1) == 1 == torch.get_num_threads()
    monkeypatch.setenv(ENV_VAR, "1")
    torch.set_num_threads(available_cores())
    assert configure_threads() == 1 == torch.get_num_threads()


@pytest.mark.parametrize("env, message", [("two", "PRIVAUDIT_THREADS must be an integer >= 1, got 'two'"),
                                          ("0", "PRIVAUDIT_THREADS must be an integer >= 1, got 0")])
def test_bad_environment_is_named(monkeypatch, env, message):
    monkeypatch.setenv(ENV_VAR, env)
    with pytest.raises(ValueError, match=message):
        configure_threads()


def test_bad_flag_exits_2_naming_it(tmp_path, capsys):
    assert main(["--threads", "0", "clean", str(tmp_path)]) == 2
    assert "--threads must be an integer >= 1, got 0" in capsys.readouterr().err
