"""ospo.registry: checkpoints and code decoders that packages register by name."""

import json
import shutil

import numpy as np
import pytest

from ospo.errors import ModelLoadError
from ospo.registry import checkpoint_names, code_decoder, resolve_model_path


def test_the_shipped_world_registers_its_checkpoint_and_decoder():
    from ospo.shapeworld import checkpoint_path
    from ospo.shapeworld.codes import paint_codes

    assert "shapeworld" in checkpoint_names()
    assert resolve_model_path("shapeworld") == str(checkpoint_path())
    assert resolve_model_path("some/dir") == "some/dir"  # anything else passes through
    assert code_decoder("shapeworld") is paint_codes
    with pytest.raises(ModelLoadError, match="'nope', which no installed package provides"):
        code_decoder("nope")


@pytest.mark.parametrize("key", ["ospo_code_decoder", "ospo_code_painter"])
def test_a_checkpoint_decodes_with_the_decoder_its_config_names_under_either_key(tmp_path, key):
    """`ospo_code_painter` is the key of ShapeWorld checkpoints pretrained before the registry; both decode exactly."""
    from ospo.model import JanusAdapter

    model = shutil.copytree(resolve_model_path("shapeworld"), tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config.pop("ospo_code_decoder")
    (model / "config.json").write_text(json.dumps({**config, key: "shapeworld"}))
    adapter = JanusAdapter.from_pretrained(str(model))
    codes = np.random.default_rng(0).integers(0, adapter.codebook_size, size=(1, adapter.num_image_tokens))
    from ospo.shapeworld.codes import paint_codes

    assert np.array_equal(np.asarray(adapter.decode_images(codes)[0]), paint_codes(codes[0]))


def test_a_checkpoint_naming_an_unknown_decoder_is_refused_in_one_line(tmp_path):
    from ospo.model import JanusAdapter

    model = shutil.copytree(resolve_model_path("shapeworld"), tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "ospo_code_decoder": "elsewhere"}))
    adapter = JanusAdapter.from_pretrained(str(model))
    with pytest.raises(ModelLoadError, match="decodes its image codes with 'elsewhere'"):
        adapter.decode_images(np.zeros((1, adapter.num_image_tokens), dtype=np.int64))
