"""Publish run folders to the Hugging Face Hub and fetch them back, through ``huggingface_hub``.

Downloads go through the Hugging Face cache (``HF_HUB_CACHE``), so a run pulled once loads
offline (``HF_HUB_OFFLINE=1``). The endpoint, token and cache come from the usual
Hugging Face environment (``HF_ENDPOINT``, ``HF_TOKEN`` or ``hf auth login``, ``HF_HOME``).
Every client or network error leaves this module as one ``CheckpointError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from achilles.errors import CheckpointError
from achilles.models.hub_refs import check_repo_id, hub_errors, HubRef
from achilles.runs.files import file_sha256
from achilles.runs.folder import RunFolder
from achilles.runs.layout import CARD, CONFIG, INIT_WEIGHTS, METRICS, PROBES_DIR, RECORD, WEIGHTS
from achilles.runs.ownership import own_regular_file, owned_folder, owned_names

#: What a published run holds; trainer state (checkpoint/) stays local.
RUN_FILES = (CONFIG, RECORD, WEIGHTS, INIT_WEIGHTS, METRICS, CARD, "*.png", f"{PROBES_DIR}/*/*")


# -- push -------------------------------------------------------------------------------
@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_url: str
    commit_oid: str
    files: list[str]


def publish_problems(run: RunFolder, config: dict) -> list[str]:
    """Why a run should not be published (empty when it is fine)."""
    problems = []
    if config.get("status") != "finished":
        problems.append(f"the run never finished (status {config.get('status')!r} after "
                        f"{config.get('epochs_completed', '?')} epochs)")
    recorded = config.get("weights_sha256")
    if not recorded:
        problems.append(f"the run record holds no sha256 for {WEIGHTS}")
    for name, key in ((WEIGHTS, "weights_sha256"), (INIT_WEIGHTS, "init_sha256")):
        recorded = config.get(key)
        if recorded and (run.path / name).is_file():
            actual = file_sha256(run.path / name)
            if actual != recorded:
                problems.append(f"{name} does not match the sha256 in the run record "
                                f"(recorded {recorded[:12]}…, file {actual[:12]}…)")
    return problems


def run_files(run_dir: Path) -> list[str]:
    """The files of a run folder that get published besides its record and card: weights,
    metrics, figures and probe outputs (``probes/NAME/*``); only the run's own regular files,
    never a link or anything outside the folder."""
    owned = owned_names(run_dir)  # a figure the run wrote, never a user's *.png beside it
    names = [WEIGHTS, INIT_WEIGHTS, METRICS] + sorted(p.name for p in run_dir.glob("*.png") if p.name in owned)
    names += sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob(f"{PROBES_DIR}/*/*")
                    if not p.name.startswith("."))
    return [name for name in names if own_regular_file(run_dir, name)]


def run_upload(run_dir: Path, card: bytes) -> dict[str, str | bytes]:
    """``{path in repo: local file or bytes}`` of a run: its record in the current layout
    (config.json with the model's settings at the top, run.json), files and card."""
    run = RunFolder(run_dir)
    upload: dict[str, str | bytes] = dict(run.export_record())
    upload.update({name: str(run.path / name) for name in run_files(run.path)})
    upload[CARD] = card
    return upload


def commit_upload(repo_id: str, upload: dict[str, str | bytes], *, message: str, private: bool = False,
                  revision: str | None = None, token: str | None = None) -> tuple[str, str]:
    """One commit of ``upload`` to ``repo_id`` (created if needed) on branch ``revision``
    (created if needed): (commit url, commit oid)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in upload.items()]
    api = HfApi(token=token)
    with hub_errors("push to", HubRef(repo_id, revision)):
        api.create_repo(repo_id, private=private or None, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, commit_message=message, revision=revision,
                                 repo_type="model")
    return info.commit_url, info.oid


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
             commit_message: str | None = None, token: str | None = None) -> PushResult:
    """Publish a finished run: record, weights, metrics, a freshly rendered card, figures and probe
    outputs, in one commit to ``repo_id`` (created if needed) on branch ``revision`` (created if needed).

    Refuses a run that is not finished or whose files do not match their recorded sha256, and
    publishes only the run's own regular files; holds the run folder's lock meanwhile."""
    check_repo_id(repo_id)
    run = RunFolder(run_dir)
    run.read_config()  # a run folder at all, before the lock file is written into it
    with run.lock("push", reading=True):  # no trainer writes it while it is read
        return _push_locked(run, repo_id, private, revision, commit_message, token)


def _push_locked(run: RunFolder, repo_id: str, private: bool, revision: str | None, commit_message: str | None,
                 token: str | None) -> PushResult:
    from achilles.zoo.card import render_card
    from achilles.zoo.index import suggest_zoo_id

    config = run.read_config()
    record = [CONFIG] + ([RECORD] if (run.path / RECORD).exists() or (run.path / RECORD).is_symlink() else [])
    for name in record + [WEIGHTS]:
        if not own_regular_file(run.path, name):
            what = "a link or not a regular file" if (run.path / name).is_symlink() or (run.path / name).exists() \
                else "missing"
            raise CheckpointError(f"cannot push {run.path}: its {name} is {what}; only a run's own files are published")
    problems = publish_problems(run, config)
    if problems:
        raise CheckpointError(f"refusing to push {run.path}: {'; '.join(problems)}")
    # One commit with an explicit file list (not upload_folder): checkpoint/ can never leak,
    # and the card, rendered with its Hub id, need not be written into the run folder.
    upload = run_upload(run.path, render_card(run.path, repo_id=repo_id).encode())
    message = commit_message or (f"achilles: {suggest_zoo_id(config)} "
                                 f"({(config.get('training') or {}).get('profile', '?')} profile, "
                                 f"{config.get('status')})")
    url, oid = commit_upload(repo_id, upload, message=message, private=private, revision=revision, token=token)
    return PushResult(repo_id, revision or "main", url, oid, list(upload))


# -- pull -------------------------------------------------------------------------------
def download_run(ref: HubRef, cache_dir: str | Path | None = None, token: str | bool | None = None,
                 force: bool = False) -> Path:
    """The run's files in the Hugging Face cache (downloaded if needed; ``force``: downloaded
    again, replacing a corrupted cached copy); its snapshot folder."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    # huggingface_hub writes the repository's folder of the cache: never through a link planted
    # there (the links it makes itself, snapshots/REV/FILE -> blobs/, are below these folders)
    repo = repo_folder_name(repo_id=ref.repo_id, repo_type="model")
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    for part in ("blobs", "snapshots", "refs"):
        owned_folder(cache, repo, part, create=False)
    snapshots = cache / repo / "snapshots"
    for revision in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        owned_folder(snapshots, revision.name, create=False)
    with hub_errors("download", ref):
        path = Path(snapshot_download(ref.repo_id, revision=ref.revision, repo_type="model",
                                      allow_patterns=list(RUN_FILES), cache_dir=cache_dir, token=token,
                                      force_download=force))
    for needed in (CONFIG, WEIGHTS):
        if not (path / needed).is_file():
            raise CheckpointError(f"cannot download {ref}: the repository has no {needed}, so it is not an "
                                  "achilles run (or its upload is incomplete)")
    return path


def resolve_revision(ref: HubRef, token: str | bool | None = None) -> str:
    """The commit hash ``ref.revision`` (branch, tag or commit) points at now."""
    from huggingface_hub import HfApi

    with hub_errors("look up", ref):
        return HfApi(token=token).repo_info(ref.repo_id, revision=ref.revision, repo_type="model").sha


def has_token(token: str | None = None) -> bool:
    """Whether a Hub token is at hand (``token``, HF_TOKEN or `hf auth login`)."""
    from huggingface_hub import get_token

    return bool(token or get_token())
