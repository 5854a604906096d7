"""Atomic checkpoint writes: a failing save leaves the previous checkpoint whole; loads are weights_only."""

from __future__ import annotations

import os

import pytest
import torch

from archsearch.train import checkpoint_io
from archsearch.train.checkpoint_io import AtomicCheckpointIO, atomic_torch_save


def test_save_and_weights_only_load(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(3), "meta": {"step": 1, "name": "x"}}, path)
    back = io.load_checkpoint(path)
    assert torch.equal(back["w"], torch.arange(3)) and back["meta"] == {"step": 1, "name": "x"}
    assert os.listdir(path.parent) == ["last.ckpt"]


class Custom:
    """A class a weights-only load must refuse to unpickle."""


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save({"obj": Custom()}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": torch.tensor(1)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def half_write(obj, fh, *args, **kwargs):
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(fh.tell() // 2)  # half a file on disk, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2), "big": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # the temporary file is gone


def test_replace_is_the_commit_point(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"v": 1}, path)

    def fail_replace(src, dst):
        raise OSError("power cut before rename")

    monkeypatch.setattr(checkpoint_io.os, "replace", fail_replace)
    with pytest.raises(OSError):
        atomic_torch_save({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]
