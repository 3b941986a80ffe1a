"""Fixtures of the engine tests (helpers live in `engine_helpers`)."""

import pytest

from engine_helpers import make_clients, random_faces


@pytest.fixture
def clients():
    return make_clients()


@pytest.fixture
def test_faces():
    return random_faces(list(range(5000, 5006)), 3, seed=77)
