"""Hub ids through huggingface_hub's cache, offline: a cache in the standard layout built from tiny
checkpoints, loaded as the snapshot folder loads; revisions; sweeps recording the commit; the
precedence of local paths, embedded names and hub ids; and one clear line for each way it fails."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import filter_repo_objects

import ropekit
from ropekit.cli import main
from ropekit.models import CheckpointError, locate
from ropekit.models import checkpoint as locate_module
from ropekit.models.hub import ALLOW, hub_settings
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus

ROOT = Path(__file__).resolve().parents[2]
MAIN = "a" * 40  # commits: any 40 hex digits
V2 = "b" * 40
PICKLED = "c" * 40


def add_to_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """``folder``'s files as commit ``commit`` of model ``repo_id`` in a huggingface_hub cache, laid out as
    its downloads lay it out: each file a blob named by its hash, linked from ``snapshots/<commit>/`` by a
    relative symlink, and ``refs/<ref>`` holding the commit. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(folder.iterdir()):
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


def fresh_constants():
    """huggingface_hub's constants as a fresh import reads them from the environment now (its module
    reads the environment once, at import)."""
    spec = importlib.util.find_spec("huggingface_hub.constants")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hub_env(monkeypatch):
    """Sets HF_* variables and huggingface_hub's constants as a process started with them would have
    them; both restored after the test."""

    def set_env(**env: str | None) -> None:
        for name in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        for name in ("XDG_CACHE_HOME",):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        fresh = fresh_constants()
        for name in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
            monkeypatch.setattr(constants, name, getattr(fresh, name))

    return set_env


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache: org/tiny (main and v2, other weights), org/pickled (pytorch_model.bin only);
    the checkpoint folders they were made from, and a corpus."""
    base = tmp_path_factory.mktemp("hub")
    for name, seed in (("tiny", 0), ("tiny2", 1)):
        make_checkpoint(base / name, {"model_type": "llama", "max_position_embeddings": 128}, seed=seed)
        add_tokenizer(base / name)
    cache = base / "cache"
    add_to_cache(cache, "org/tiny", base / "tiny", MAIN)
    add_to_cache(cache, "org/tiny", base / "tiny2", V2, refs=("v2",))
    pickled = base / "pickled"
    pickled.mkdir()
    shutil.copy(base / "tiny" / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    add_to_cache(cache, "org/pickled", pickled, PICKLED)
    write_corpus(base / "corpus", (300, 400))
    return base


@pytest.fixture
def offline(hub, hub_env):
    hub_env(HF_HUB_CACHE=str(hub / "cache"), HF_HUB_OFFLINE="1")
    return hub / "cache"


def nll(model) -> torch.Tensor:
    return ropekit.token_nll(model, torch.arange(3, 60))


def test_settings_are_huggingface_hubs_own(hub, hub_env, tmp_path):
    hub_env(HF_HUB_CACHE=str(hub / "cache"), HF_HUB_OFFLINE="1")
    assert hub_settings() == (hub / "cache", True)
    hub_env(HF_HOME=str(tmp_path), TRANSFORMERS_OFFLINE="1")  # HF_HOME/hub, and transformers' switch too
    assert hub_settings() == (tmp_path / "hub", True)
    hub_env()
    assert hub_settings() == (Path.home() / ".cache" / "huggingface" / "hub", False)


def test_loads_offline_through_the_cache_as_the_snapshot_folder(hub, offline):
    model = ropekit.load_model("org/tiny")
    snapshot = offline / "models--org--tiny" / "snapshots" / MAIN
    assert model.source == str(snapshot)
    assert torch.equal(nll(model), nll(ropekit.load_model(snapshot)))
    assert torch.equal(nll(model), nll(ropekit.load_model(hub / "tiny")))
    assert model.tokenizer.encode("the of") == [1, 3, 4]
    checkpoint = locate("org/tiny")
    assert (checkpoint.hub.repo_id, checkpoint.hub.revision, checkpoint.hub.commit) == ("org/tiny", "main", MAIN)


def test_revisions_by_commit_and_by_named_ref(hub, offline):
    other = nll(ropekit.load_model(hub / "tiny2"))
    assert torch.equal(nll(ropekit.load_model("org/tiny", revision="v2")), other)
    assert torch.equal(nll(ropekit.load_model("org/tiny@v2")), other)
    assert torch.equal(nll(ropekit.load_model("org/tiny", revision=V2)), other)
    assert torch.equal(nll(ropekit.load_model(f"org/tiny@{MAIN}")), nll(ropekit.load_model(hub / "tiny")))
    assert locate("org/tiny@v2").hub.commit == V2
    config = ropekit.models.read_model_config("org/tiny", revision="v2")[1]
    assert config == json.loads((hub / "tiny2" / "config.json").read_text())


def test_pickle_only_repository_is_refused_naming_the_files(offline):
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model\.bin\).*never unpickles"):
        ropekit.load_model("org/pickled")


def test_missing_model_offline_names_the_id_and_the_cache(offline):
    with pytest.raises(CheckpointError) as err:
        ropekit.load_model("org/absent")
    message = str(err.value)
    assert f"model 'org/absent' is not in the hub cache {offline}" in message
    assert "HF_HUB_OFFLINE is set" in message and "\n" not in message


def test_missing_revision_offline_names_it_and_what_is_cached(offline):
    with pytest.raises(CheckpointError) as err:
        ropekit.load_model("org/tiny", revision="v9")
    message = str(err.value)
    assert f"revision 'v9' of 'org/tiny' is not in the hub cache {offline}" in message
    assert f"main -> {MAIN}" in message and f"v2 -> {V2}" in message and "\n" not in message


def test_online_uses_the_cache_when_the_hub_is_unreachable(hub, hub_env, monkeypatch):
    hub_env(HF_HUB_CACHE=str(hub / "cache"))

    def unreachable(self, *args, **kwargs):
        raise httpx2.ConnectError("no route to host")

    monkeypatch.setattr(HfApi, "repo_info", unreachable)
    assert torch.equal(nll(ropekit.load_model("org/tiny@v2")), nll(ropekit.load_model(hub / "tiny2")))
    with pytest.raises(CheckpointError, match=r"'org/absent' is not in the hub cache .* reached \(ConnectError"):
        ropekit.load_model("org/absent")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RevisionNotFoundError, "revision 'v9' of 'org/tiny' does not exist on the hub"),
        (RepositoryNotFoundError, "model 'org/tiny' is not on the hub"),
    ],
)
def test_online_errors_from_the_hub(hub, hub_env, monkeypatch, error, expected):
    hub_env(HF_HUB_CACHE=str(hub / "cache"))

    def answer(self, repo_id, **kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        raise error("404 Client Error", response=httpx2.Response(404, request=request))

    monkeypatch.setattr(HfApi, "repo_info", answer)
    with pytest.raises(CheckpointError, match=expected):
        ropekit.load_model("org/tiny@v9")


def test_downloads_only_config_tokenizer_and_safetensors():
    files = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "consolidated.safetensors",  # Mistral's own format: the same weights again
        "pytorch_model.bin",
        "pytorch_model-00001-of-00002.bin",
        "original/consolidated.00.pth",
        "README.md",
        "onnx/model.onnx",
    ]
    assert list(filter_repo_objects(files, allow_patterns=list(ALLOW))) == [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_precedence_local_path_then_embedded_then_hub(hub, offline, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(hub / "tiny2", tmp_path / "org" / "tiny")  # a local folder named like the hub id wins
    assert locate("org/tiny").hub is None and locate("org/tiny").path == Path("org/tiny")
    assert torch.equal(nll(ropekit.load_model("org/tiny")), nll(ropekit.load_model(hub / "tiny2")))
    assert locate("org/tiny@v2").hub.commit == V2  # not a local path: the hub id
    (tmp_path / "org" / "pickled").mkdir()  # a local path that is no checkpoint is refused, not passed over
    with pytest.raises(CheckpointError, match="org/pickled is a folder without config.json; it shadows the hub id"):
        locate("org/pickled")
    monkeypatch.setattr(locate_module, "embedded_path", lambda name: Path(f"/packages/{name}.gguf"))
    (tmp_path / "smollm2-135m").mkdir()  # a results folder named like an embedded model does not shadow it
    assert locate("smollm2-135m").path == Path("/packages/smollm2-135m.gguf")
    shutil.copytree(hub / "tiny", tmp_path / "gemma3-270m")  # a local checkpoint does
    assert locate("gemma3-270m").path == Path("gemma3-270m") and locate("gemma3-270m").kind == "folder"


@pytest.mark.parametrize(
    ("name", "revision", "expected"),
    [
        ("org/na me", None, "neither a local path nor a valid hub id org/name"),
        ("org/x--y", None, "Cannot have -- or .."),
        ("org/tiny@", None, "empty revision after '@'"),
        ("org/tiny@v2", "main", "names revision 'v2' and revision='main'; give one"),
        ("a/b/c", None, "model 'a/b/c' is not found: expected an embedded name"),
        ("./org/tiny", None, "is not found"),
        ("tiny", None, "or a hub id org/name"),
    ],
)
def test_malformed_or_unknown_ids_are_refused(offline, name, revision, expected):
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        locate(name, revision)


def test_a_revision_is_for_hub_ids_only(hub, offline):
    with pytest.raises(CheckpointError, match="applies to hub ids"):
        ropekit.load_model(hub / "tiny", revision="main")


def test_sweep_on_a_hub_id_records_the_id_and_commit(hub, hub_env, tmp_path, capsys):
    offline = tmp_path / "cache"  # its own copy: main moves below
    shutil.copytree(hub / "cache", offline, symlinks=True)
    hub_env(HF_HUB_CACHE=str(offline), HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    argv = ["sweep", "--model", "org/tiny", "--corpus", str(hub / "corpus"), "--lengths", "32,64"]
    argv += ["--n-docs", "2", "--out", str(out), "--quiet", "--no-report"]
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    record = meta["models"]["org/tiny"]
    assert record["hub_id"] == "org/tiny" and record["revision"] == "main" and record["commit"] == MAIN
    assert record["path"] == str(offline / "models--org--tiny" / "snapshots" / MAIN) and record["sha256"]
    assert meta["spec"]["models"] == ["org/tiny"] and "--model org/tiny" in meta["command"]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])
    # main moved to another commit: the DIR's cells are of the old one, so resuming is refused
    (offline / "models--org--tiny" / "refs" / "main").write_text(V2)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"holds cells of org/tiny at commit {MAIN}, but revision 'main' is now commit {V2}" in err
    assert err.count("\n") == 1


def test_spec_with_a_revision_runs_that_snapshot(hub, offline, tmp_path):
    from ropekit.sweep import run_sweep, spec_from_dict
    from ropekit.sweep.cells import plan_cells

    data = {"models": ["org/tiny@v2"], "corpus": str(hub / "corpus"), "lengths": [32], "ropes": ["default"]}
    data["n_docs"] = 1
    spec = spec_from_dict(data)
    assert run_sweep(spec, tmp_path, quiet=True).ok
    record = json.loads((tmp_path / "meta.json").read_text())["models"]["org/tiny@v2"]
    assert (record["revision"], record["commit"]) == ("v2", V2)
    # the commit is part of a hub model's cell keys; a local folder's keys are as before
    local = spec_from_dict({**data, "models": [str(hub / "tiny2")]})
    assert {c.key for c in plan_cells(spec, "x")[0]}.isdisjoint(c.key for c in plan_cells(local, "x")[0])


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("org/absent", "model 'org/absent' is not in the hub cache {cache}; HF_HUB_OFFLINE is set"),
        ("org/tiny@v9", "revision 'v9' of 'org/tiny' is not in the hub cache {cache}"),
        ("org/pickled", "only pickle weights (pytorch_model.bin)"),
        ("org/x--y", "valid hub id"),
    ],
)
def test_cli_errors_are_one_line(offline, capsys, tmp_path, model, expected):
    code = main(["sweep", "--model", model, "--lengths", "64", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and expected.format(cache=offline) in err
    assert err.startswith("ropekit sweep: error:") and "Traceback" not in err and err.count("\n") == 1


def test_a_fresh_process_reads_hf_home_and_hf_hub_offline(hub, tmp_path):
    """No constants patched: the CLI in a new process finds the cache under HF_HOME as
    huggingface_hub does, offline."""
    add_to_cache(tmp_path / "home" / "hub", "org/tiny", hub / "tiny", MAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env |= {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ropekit.cli", "inspect", "default", "--model"]
    result = subprocess.run([*command, "org/tiny"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "head_dim=16" in result.stdout
    result = subprocess.run([*command, "org/absent"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2 and f"is not in the hub cache {tmp_path / 'home' / 'hub'}" in result.stderr
