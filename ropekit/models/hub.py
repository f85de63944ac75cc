"""Hub ids: ``org/name`` or ``org/name@revision``, resolved to a snapshot folder of huggingface_hub's
cache as transformers' ``from_pretrained`` resolves them.

The cache folder and the offline switch are huggingface_hub's own (:func:`hub_settings`): its
``constants.HF_HUB_CACHE`` (from ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``) and ``constants.HF_HUB_OFFLINE`` (``HF_HUB_OFFLINE`` or
``TRANSFORMERS_OFFLINE``), read at each call and passed to ``snapshot_download`` explicitly.
huggingface_hub reads the environment once, when it is imported (``import ropekit`` does not import
it; the first model loaded does), so transformers in the same process sees the same cache.

Only what ropekit reads is fetched (:data:`ALLOW`): config, tokenizer files and the safetensors
weights. Offline, or where the hub cannot be reached, the cached snapshot is used and nothing is
required from the network. A repository whose weights are pickles only is refused (ropekit never
unpickles), naming the files.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from .sources import CheckpointError

# What a snapshot needs, as transformers names it (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, the
# shards' model-0000i-of-0000n; tokenizer files). Not "*.safetensors": Mistral's repositories also
# hold the same weights as consolidated.safetensors, which would double the download.
ALLOW = (
    "config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.tiktoken",
    "chat_template.jinja",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
)
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")  # torch.load formats: never read


@dataclass(frozen=True)
class HubId:
    """A hub id as typed: ``repo_id`` (``org/name``) and the revision asked for (None: ``main``)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class HubSnapshot:
    """A hub id resolved: the commit its revision names and that commit's snapshot folder."""

    repo_id: str
    revision: str  # as asked ("main" when none was)
    commit: str
    path: Path

    def record(self) -> dict[str, str]:
        """What a sweep's meta.json says of it: exactly which snapshot ran."""
        return {"hub_id": self.repo_id, "revision": self.revision, "commit": self.commit}


def looks_like_hub_id(text: str) -> bool:
    """Whether ``text`` is written as a hub id (``org/name``, optionally ``@revision``) rather than a
    path: one slash, no leading ``/``, ``.`` or ``~``, no file suffix ropekit loads."""
    repo = text.split("@", 1)[0]
    return (
        repo.count("/") == 1
        and not repo.startswith(("/", ".", "~"))
        and "\\" not in repo
        and not repo.endswith((".gguf", ".json", ".safetensors"))
    )


def parse_hub_id(text: str, revision: str | None = None) -> HubId:
    """``org/name`` or ``org/name@revision`` (or the revision given apart), checked as the hub checks
    repository names; a malformed id is refused naming what is wrong."""
    repo, at, inline = text.partition("@")
    if at and not inline:
        raise CheckpointError(f"hub id {text!r} has an empty revision after '@'; write org/name@REVISION")
    if at and revision is not None and inline != revision:
        raise CheckpointError(f"hub id {text!r} names revision {inline!r} and revision={revision!r}; give one")
    revision = inline or revision
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise CheckpointError(
            f"{text!r} is neither a local path nor a valid hub id org/name[@revision]: {str(err).rstrip('.')}"
        ) from None
    if revision is not None and (not isinstance(revision, str) or not revision.strip() or revision != revision.strip()):
        raise CheckpointError(f"revision {revision!r} of {repo!r} is not allowed; expected a branch, tag or commit")
    return HubId(repo, revision)


def hub_settings() -> tuple[Path, bool]:
    """huggingface_hub's cache folder and whether it is offline, read now from its constants."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE), bool(constants.HF_HUB_OFFLINE)


def hub_snapshot(hub: HubId) -> HubSnapshot:
    """The cached snapshot of ``hub`` (downloading what :data:`ALLOW` names where the network allows):
    a missing model or revision, or a repository of pickles, is one line naming it and the cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, offline = hub_settings()
    revision = hub.revision or "main"
    try:
        folder = snapshot_download(
            hub.repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=list(ALLOW),
        )
    except RevisionNotFoundError:
        raise CheckpointError(
            f"revision {revision!r} of {hub.repo_id!r} does not exist on the hub; give a branch, tag or commit it has"
        ) from None
    except GatedRepoError:
        raise CheckpointError(
            f"{hub.repo_id!r} is gated on the hub: accept its terms on its page and log in (hf auth login)"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"model {hub.repo_id!r} is not on the hub (or is private: log in with hf auth login); "
            f"nor is it in the hub cache {cache}"
        ) from None
    except LocalEntryNotFoundError as err:  # offline or unreachable, and not in the cache
        raise CheckpointError(_not_cached(hub.repo_id, revision, cache, offline, err.__cause__)) from None
    except OSError as err:  # IncompleteSnapshotError (a partial download, offline) and the like
        raise CheckpointError(f"{hub} in the hub cache {cache}: {str(err).splitlines()[0]}") from None
    snapshot = HubSnapshot(hub.repo_id, revision, Path(folder).name, Path(folder))
    _check_weights(snapshot, cache, offline)
    return snapshot


def _not_cached(repo_id: str, revision: str, cache: Path, offline: bool, cause: BaseException | None) -> str:
    """Why a hub id is not in the cache: the model is not there at all, or not that revision (naming
    the revisions that are), and why nothing was downloaded."""
    download = f"hf download {repo_id}" + (f" --revision {revision}" if revision != "main" else "")
    why = (
        "HF_HUB_OFFLINE is set, so nothing is downloaded; download it where the network allows "
        f"({download}) or unset HF_HUB_OFFLINE"
        if offline
        else f"the hub cannot be reached ({type(cause).__name__ if cause else 'no connection'})"
    )
    cached = _cached_revisions(repo_id, cache)
    if cached is None:
        return f"model {repo_id!r} is not in the hub cache {cache}; {why}"
    return f"revision {revision!r} of {repo_id!r} is not in the hub cache {cache} (cached: {cached}); {why}"


def _cached_revisions(repo_id: str, cache: Path) -> str | None:
    """The cached revisions of a model as ``ref -> commit`` (detached commits alone), or None when
    the cache holds nothing of it."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(cache).repos
    except (CacheNotFound, OSError):
        return None
    for repo in repos:
        if repo.repo_type == "model" and repo.repo_id == repo_id:
            named = [f"{ref} -> {r.commit_hash}" for r in repo.revisions for ref in sorted(r.refs)]
            detached = [r.commit_hash for r in repo.revisions if not r.refs]
            return ", ".join(sorted(named) + sorted(detached)) or "no revision"
    return None


def _check_weights(snapshot: HubSnapshot, cache: Path, offline: bool) -> None:
    """A snapshot must hold safetensors weights: one that has only pickles is refused naming them."""
    files = sorted(str(p.relative_to(snapshot.path)) for p in snapshot.path.rglob("*") if p.is_file())
    if any(fnmatch.fnmatch(f, "*.safetensors") for f in files):
        return
    if not offline:  # the pickles are not downloaded (ALLOW): ask the hub what the repository holds
        try:
            from huggingface_hub import HfApi

            files = sorted(set(files) | set(HfApi().list_repo_files(snapshot.repo_id, revision=snapshot.commit)))
        except Exception:  # unreachable: what the cache holds is all there is to name
            pass
    pickles = [f for f in files if any(fnmatch.fnmatch(f, p) for p in PICKLES)]
    where = f"{snapshot.repo_id} (commit {snapshot.commit})"
    if pickles:
        raise CheckpointError(
            f"{where} has only pickle weights ({', '.join(pickles)}): ropekit never unpickles a checkpoint; use a "
            "revision with *.safetensors (the hub's conversion bot opens them as refs/pr/N) or convert it"
        )
    fix = "; HF_HUB_OFFLINE is set: unset it to download them" if offline else ""
    raise CheckpointError(f"{where} has no *.safetensors weights in the hub cache {cache}{fix}")
