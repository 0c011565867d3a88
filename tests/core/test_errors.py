"""User errors are their own kind: library code catching ValueError must not swallow them, nor the reverse."""

from __future__ import annotations

import pytest

from nas.core.arch import ArchConfig
from nas.core.errors import ArchConfigError, NasUserError


def test_user_errors_are_not_value_errors():
    assert not issubclass(NasUserError, ValueError)
    with pytest.raises(ArchConfigError):
        ArchConfig(hidden_size=-1, num_layers=2, num_heads=2, intermediate_size=8)
    try:
        ArchConfig(hidden_size=-1, num_layers=2, num_heads=2, intermediate_size=8)
    except ValueError:  # pragma: no cover -- the point of the test
        pytest.fail("a user error was caught as a ValueError")
    except NasUserError:
        pass


@pytest.mark.parametrize("hf, pattern", [
    ({"model_type": "llama", "hidden_size": 512}, "HF config has no 'num_attention_heads'"),
    ({"model_type": "llama", "hidden_size": "512", "num_attention_heads": 8}, "'hidden_size' must be a positive"),
    ({"model_type": "llama", "hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 2,
      "intermediate_size": 1024, "vocab_size": 100, "rope_theta": "big"}, "'rope_theta' must be a positive number"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
])
def test_bad_hf_configs_are_one_line_user_errors(hf, pattern):
    with pytest.raises(NasUserError, match=pattern):
        ArchConfig.from_hf_config(hf)
