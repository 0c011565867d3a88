"""Proxy training on real text: rungs, determinism, divergence and time limits (tiny models, a few seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from nas.core.arch import ArchConfig
from nas.proxy.corpus import load_corpus
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import ProxyDiverged, ProxyTimeout, ProxyTrainer, TrainSettings

ARCH = ArchConfig(hidden_size=512, num_layers=2, num_heads=8, num_kv_heads=2, intermediate_size=1408)
RULE = ProxyRule(shrink=8)
FAST = TrainSettings(batch_size=4, seq_len=64, warmup_tokens=512, eval_windows=8)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(autouse=True)
def deterministic():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def test_rungs_learn_and_report_bits_per_byte(corpus):
    trainer = ProxyTrainer(ARCH, corpus, RULE, FAST)
    assert trainer.proxy.vocab_size == 256 and trainer.proxy.num_kv_heads == 1 and trainer.proxy.num_heads == 4
    first = trainer.evaluate()
    assert first == pytest.approx(8.0, abs=0.5)  # an untrained model: about uniform over 256 bytes
    r0 = trainer.train_to(4096, rung=0)
    r1 = trainer.train_to(12288, rung=1)
    assert r0.tokens == 4096 and r1.tokens == 12288
    assert r1.val_bpb < r0.val_bpb < first
    assert r0.curve and all(math.isfinite(b) for _, b in r0.curve + r1.curve)
    assert trainer.stable_tokens < 12288  # the cool-downs were branches, not part of the stable phase


def test_same_seed_same_score(corpus):
    a = ProxyTrainer(ARCH, corpus, RULE, FAST).train_to(2048).val_bpb
    b = ProxyTrainer(ARCH, corpus, RULE, FAST).train_to(2048).val_bpb
    assert a == b


def test_divergence_and_time_limit_fail_the_run(corpus):
    with pytest.raises(ProxyDiverged):
        ProxyTrainer(ARCH, corpus, RULE, TrainSettings(**{**FAST.to_dict(), "lr": 1e2, "clip": 1e9})).train_to(8192)
    with pytest.raises(ProxyDiverged, match="learned nothing"):  # collapses to the uniform guess, never NaN
        ProxyTrainer(ARCH, corpus, RULE, TrainSettings(**{**FAST.to_dict(), "lr": 1e4})).train_to(4096)
    with pytest.raises(ProxyTimeout):
        ProxyTrainer(ARCH, corpus, RULE, TrainSettings(**{**FAST.to_dict(), "time_limit_s": 1e-6})).train_to(4096)
