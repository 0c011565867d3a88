"""The search command's defaults (kept in nas.commands.search so `nas --help` imports nothing heavy) equal the
package's own."""

from __future__ import annotations

from nas.commands import search as cli
from nas.search import proxy, selection


def test_cli_proxy_defaults_equal_the_packages():
    assert cli.DEFAULT_PROXY_TOKENS == proxy.DEFAULT_RUNG_TOKENS
    assert cli.DEFAULT_ETA == proxy.DEFAULT_ETA
    assert cli.DEFAULT_FINAL_SEEDS == proxy.DEFAULT_FINAL_SEEDS == proxy.ProxyOptions().final_seeds
    assert cli.DEFAULT_PROXY_SHAPES == selection.DEFAULT_SHAPES
