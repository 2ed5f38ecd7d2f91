import json

import pytest
import torch
from transformers import AutoModelForMaskedLM

from diffusion_core import CheckpointError, TokenizerError, checkpoint


def test_checkpoint_loads_with_plain_transformers(tiny_checkpoint, tiny_model):
    model = AutoModelForMaskedLM.from_pretrained(tiny_checkpoint)
    ids = torch.tensor([[0, 10, 11, 4, 2]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny_model(ids).logits, atol=1e-5)
    files = json.loads((tiny_checkpoint / "manifest.json").read_text())["files"]
    assert {"config.json", "model.safetensors", "unmask.json", "tokenizer.json"} <= set(files)
    assert not list(tiny_checkpoint.glob("*.bin")), "weights are safetensors only"


def test_round_trip_through_unmask_loader(tiny_checkpoint, tiny_model, tokenizer):
    model, loaded_tokenizer = checkpoint.load(tiny_checkpoint, torch.device("cpu"))
    assert loaded_tokenizer.mask_token == "<mask>" and not model.training
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    for (name, a), b in zip(model.state_dict().items(), tiny_model.state_dict().values()):
        assert torch.equal(a, b), name
    ids = torch.tensor([[0, 10, 11, 4, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiny_model(ids).logits)


def test_tampered_weights_are_refused(tiny_checkpoint, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        checkpoint.load(copy, torch.device("cpu"))


def test_missing_tokenizer_is_a_clear_error(tiny_checkpoint, tmp_path):
    import shutil

    copy = tmp_path / "notok"
    shutil.copytree(tiny_checkpoint, copy)
    for path in copy.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            path.unlink()
    with pytest.raises(TokenizerError, match="no usable tokenizer"):
        checkpoint.load(copy, torch.device("cpu"))


def test_save_replaces_atomically_and_leaves_no_temporary(tiny_checkpoint, tiny_model, tokenizer, tmp_path):
    """A reader polling the checkpoint while it is replaced again and again always finds one."""
    import sys
    import threading

    target = tmp_path / "ckpt"
    checkpoint.save(tiny_model, tokenizer, target, {"n": 0})
    missing, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            if not (target / "unmask.json").is_file():
                missing.append(1)

    reader = threading.Thread(target=read)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the reader run between any two steps of a save
    reader.start()
    try:
        for n in range(1, 31):
            checkpoint.save(tiny_model, tokenizer, target, {"n": n})
    finally:
        stop.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert not missing, f"the checkpoint was missing {len(missing)} times while being replaced"
    assert checkpoint.read_metadata(target) == {"n": 30}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    checkpoint.verify(target)


def test_a_manifest_that_names_a_file_outside_its_checkpoint_is_refused(tmp_path, tiny_checkpoint):
    """A checkpoint from a job or a copy must not vouch for files elsewhere, even with their right hash."""
    import shutil

    from diffusion_core.manifest import sha256, verify

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"not this checkpoint's")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../elsewhere.safetensors"] = {"sha256": sha256(outside), "bytes": outside.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="outside the checkpoint: ../elsewhere.safetensors"):
        verify(copy)
