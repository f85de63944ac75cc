"""A rope type is one record, addable from outside: from a notebook with register_rope, and from
an installed package through the ``ropekit.ropes`` entry-point group (found by inspect and sweep)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import ropekit
from ropekit.rope import RopeConfigError, RopeType, get_rope, parse_rope, preset, registry, rope_types, spec_frequencies
from tests.models.tiny import add_tokenizer, make_checkpoint, truncated_ppl, write_corpus
from tests.plugins import install_plugin, swept_ppl, with_plugins

# A plugin's whole source: NTK-aware scaling (bloc97; the YaRN repo's NTK-scaled rotary embedding),
# theta x alpha^(d / (d - 2)), as one record.
PLUGIN = textwrap.dedent(
    """
    from dataclasses import dataclass

    from ropekit.rope import RopeType
    from ropekit.rope.frequencies import default


    @dataclass(frozen=True)
    class NtkParams:
        alpha: float


    def ntk_frequencies(spec, seq_len):
        d = spec.rotary_dim
        theta = spec.rope_theta * spec.scaling.alpha ** (d / (d - 2))
        return 1.0 / (theta ** (__import__("torch").arange(0, d, 2).float() / d)), 1.0


    def ntk_preset(spec, factor):
        return {"rope_type": "ntk_plugin", "alpha": 2.0 if factor is None else factor}


    RECORD = RopeType("ntk_plugin", NtkParams, ntk_frequencies, ntk_preset)
    """
)
GEO = {"head_dim": 16, "rope_theta": 10000.0, "max_position_embeddings": 128}


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are dropped after it."""
    rope_types()  # ropekit's own first
    monkeypatch.setattr(registry.ROPES, "records", dict(registry.ROPES.records))


def test_ropekits_six_types_are_records():
    assert list(rope_types())[:6] == ["default", "linear", "dynamic", "yarn", "longrope", "llama3"]
    for name, record in rope_types().items():
        assert record.name == name == record.params.rope_type and callable(record.frequencies)


def test_register_from_a_notebook_is_parsed_computed_and_preset_like_the_builtins(scratch_registry):
    namespace: dict = {}
    exec(PLUGIN, namespace)  # the plugin's own code, here as a notebook cell would define it
    ropekit.register_rope(namespace["RECORD"])
    spec = parse_rope({"rope_type": "ntk_plugin", "alpha": 4.0}, **GEO)
    inv_freq, scale = spec_frequencies(spec)
    theta = 1e4 * 4.0 ** (16 / 14)
    default, _ = spec_frequencies(parse_rope({"rope_theta": theta}, **GEO))
    torch.testing.assert_close(inv_freq, default, rtol=1e-6, atol=0)
    assert scale == 1.0
    assert preset("ntk_plugin", 3.0, **GEO) == {"rope_type": "ntk_plugin", "alpha": 3.0}
    with pytest.raises(RopeConfigError, match="unknown key 'factor'"):  # its keys are its fields
        parse_rope({"rope_type": "ntk_plugin", "factor": 2.0}, **GEO)
    with pytest.raises(ValueError, match="already registered"):
        ropekit.register_rope("ntk_plugin", namespace["NtkParams"], lambda spec, n: (None, 1.0))


def test_bad_records_are_refused(scratch_registry):
    with pytest.raises(ValueError, match="identifier"):
        RopeType("no spaces", object, lambda s, n: None)
    with pytest.raises(ValueError, match="dataclass"):
        RopeType("plain", object, lambda s, n: None)
    assert get_rope("never_registered") is None


def test_an_installed_plugin_is_found_by_inspect_and_sweep(tmp_path):
    site = tmp_path / "site"
    install_plugin(site, "ropekit_ntk_plugin", PLUGIN, "ropekit.ropes", "ntk_plugin")
    make_checkpoint(tmp_path / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(tmp_path / "tiny")
    write_corpus(tmp_path / "corpus", (300, 280))
    cli = [sys.executable, "-m", "ropekit.cli"]
    inspect = subprocess.run(
        [
            *cli,
            "inspect",
            "ntk_plugin:4",
            "--head-dim",
            "16",
            "--rope-theta",
            "1e4",
            "--max-position-embeddings",
            "128",
        ],
        env=with_plugins(site),
        capture_output=True,
        text=True,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "ntk_plugin:4: {'rope_type': 'ntk_plugin', 'rope_theta': 10000.0, 'alpha': 4.0}" in inspect.stdout
    ppl = swept_ppl(site, tmp_path / "tiny", tmp_path / "corpus", "ntk_plugin:4", tmp_path / "out")
    # The oracle: NTK with alpha 4 is the default rope at theta x 4^(d/(d-2)), run in this process.
    model = ropekit.load_model(tmp_path / "tiny", rope_scaling={"rope_theta": 1e4 * 4.0 ** (16 / 14)})
    for length, value in ppl.items():
        assert value == pytest.approx(truncated_ppl(model, tmp_path / "corpus", length, n_docs=2), rel=1e-5)


def test_a_type_reads_its_own_preset_arguments(scratch_registry):
    """``TYPE:ARGS`` hands the text to the record's ``arguments`` (here ``G,W``), and a text it
    refuses is one clear line naming the form it expects."""
    from dataclasses import dataclass

    from ropekit.rope import model_ropes
    from ropekit.rope.frequencies import default
    from ropekit.rope.presets import parse_preset

    @dataclass(frozen=True)
    class Grouped:
        group_size: int
        window: int

    def two_integers(text: str) -> tuple[int, int]:
        try:
            group, window = (int(part) for part in text.split(","))
        except ValueError:
            raise ValueError("G,W: two integers, the group size and the window") from None
        return group, window

    def grouped_preset(spec, args):
        group, window = args or (4, 32)
        return {"rope_type": "grouped_test", "group_size": group, "window": window}

    ropekit.register_rope("grouped_test", Grouped, default, preset=grouped_preset, arguments=two_integers)
    assert parse_preset("grouped_test:8,64") == ("grouped_test", (8, 64))
    assert parse_preset("grouped_test") == ("grouped_test", None)
    config = {"model_type": "llama", "max_position_embeddings": 128, "hidden_size": 64, "num_attention_heads": 4}
    spec = model_ropes(config, "grouped_test:2,16")["full_attention"]
    assert (spec.scaling.group_size, spec.scaling.window) == (2, 16)
    with pytest.raises(RopeConfigError, match=r"'8' is not understood; expected G,W: two integers"):
        parse_preset("grouped_test:8")
    with pytest.raises(RopeConfigError, match=r"'x' is not understood; expected a number"):
        parse_preset("linear:x")


def test_upstream_types_are_transformers_rope_init_functions():
    """The records marked upstream are transformers' ROPE_INIT_FUNCTIONS (which leaves default out), so
    export writes exactly the types transformers can read."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    upstream = {name for name, record in rope_types().items() if record.upstream}
    assert upstream == {"default", *ROPE_INIT_FUNCTIONS}
