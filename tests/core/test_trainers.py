"""What each trainer can build: the rules `nas search --trainer` filters by agree with what `nas export` refuses."""

from __future__ import annotations

import numpy as np
import pytest

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.core.trainers import TRAINERS, buildable, check_trainer, missing
from nas.export import render

SHAPES = [ArchConfig(hidden_size=h, num_layers=2, num_heads=n, num_kv_heads=kv, intermediate_size=f, ffn_kind=k,
                     tie_embeddings=t, qkv_bias=b, head_dim=d, vocab_size=256)
          for h, n, kv, f, k, t, b, d in [
              (256, 4, 4, 1024, "gelu", True, False, None), (256, 4, 4, 1024, "gelu", False, False, None),
              (256, 4, 2, 1024, "gelu", True, False, None), (256, 4, 4, 768, "gelu", True, False, None),
              (256, 4, 4, 704, "swiglu", True, False, None), (256, 4, 1, 704, "reglu", True, False, None),
              (256, 4, 4, 704, "geglu", False, False, None), (256, 4, 2, 704, "swiglu", True, True, None),
              (192, 5, 5, 512, "swiglu", True, False, 48), (192, 5, 5, 512, "swiglu", True, True, 48),
              (256, 4, 4, 1024, "gelu", True, True, None)]]
FORMAT = {"hf": "hf", "litgpt": "litgpt", "nanogpt": "nanogpt"}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_rules_agree_with_the_exporters(trainer):
    mask = buildable(ArchBatch.from_configs(SHAPES), trainer)
    for arch, ok in zip(SHAPES, mask):
        try:
            render(arch, FORMAT[trainer])
            exported = True
        except NasUserError:
            exported = False
        assert exported == bool(ok) == (missing(arch, trainer) == []), (trainer, arch.short_tag, missing(arch, trainer))


def test_some_shapes_each_way_and_unknown_trainer():
    batch = ArchBatch.from_configs(SHAPES)
    for trainer in TRAINERS:
        mask = buildable(batch, trainer)
        assert mask.any() and not mask.all()
    assert np.array_equal(buildable(batch, "litgpt"), np.array([s.ffn_kind != "reglu" for s in SHAPES]))
    with pytest.raises(NasUserError, match="--trainer 'keras'"):
        check_trainer("keras")
