"""Fixtures shared by several test files."""
import os
import socket

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs one worker a core), each worker and its subprocesses on one
    CPU thread: two workers of two threads each on two cores contend and run slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache (its checkpoints folder, returned) and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    return cache


@pytest.fixture(scope="module")
def one_thread():
    """Small inputs: one thread is faster here than several contending for shared cores (4x on 2 busy ones)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def decoding_cache(tmp_path_factory):
    """The image decoding check's cache (datasets.image_dataset.cache_folder) in the session's temporary
    folder, not the user's ~/.cache; subprocesses inherit it."""
    previous = os.environ.get("OBD_SD_CACHE")
    os.environ["OBD_SD_CACHE"] = str(tmp_path_factory.mktemp("obd_sd_cache"))
    yield
    if previous is None:
        del os.environ["OBD_SD_CACHE"]
    else:
        os.environ["OBD_SD_CACHE"] = previous
