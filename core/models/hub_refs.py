"""Hub repository references (``ORG/NAME``, ``hf-hub:ORG/NAME@REV``) and huggingface_hub's errors
as one-line achilles errors: used by ``from_pretrained`` here and by the zoo's push and pull."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from achilles.errors import AchillesError, CheckpointError

HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubUnavailableError(CheckpointError):
    """The Hub cannot be reached (offline, no network) and the files are not in the local cache."""


@dataclass(frozen=True)
class HubRef:
    """A run on the Hub: ``repo_id`` (``ORG/NAME``) at ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(text: str) -> bool:
    return str(text).startswith(HUB_PREFIX)


def parse_hub_ref(text: str) -> HubRef:
    """``hf-hub:ORG/NAME[@REVISION]`` -> HubRef."""
    body = str(text)[len(HUB_PREFIX):] if is_hub_ref(text) else str(text)
    repo_id, _, revision = body.partition("@")
    check_repo_id(repo_id, f"{text!r}")
    if "@" in body and not revision:
        raise CheckpointError(f"invalid Hub id {text!r}: nothing after '@' (expected hf-hub:ORG/NAME[@REVISION])")
    return HubRef(repo_id, revision or None)


def check_repo_id(repo_id: str, what: str | None = None) -> str:
    if not _REPO_ID.match(repo_id or ""):
        raise CheckpointError(f"invalid Hub repo id {what or repr(repo_id)}: expected ORG/NAME "
                              "(letters, digits, '-', '_', '.'), e.g. hf-hub:my-org/mamba2-inverse")
    return repo_id


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# -- error translation ------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _missing_file(exc) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", ""))
    return url.split("/resolve/", 1)[-1].split("/", 1)[-1] if "/resolve/" in url else "a file"


@contextmanager
def hub_errors(action: str, ref: HubRef | str) -> Iterator[None]:
    """Turn whatever huggingface_hub or the network raises while doing ``action`` on ``ref``
    into one clear CheckpointError line."""
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except AchillesError:
        raise
    except hf.RevisionNotFoundError:
        raise CheckpointError(f"cannot {action} {ref}: the repository has no revision "
                              f"{getattr(ref, 'revision', None) or 'main'!r}") from None
    except hf.RepositoryNotFoundError:
        repo = getattr(ref, "repo_id", ref)
        raise CheckpointError(f"cannot {action} {ref}: no repository {repo!r} at {endpoint()} "
                              "(or it is private and your token cannot see it)") from None
    except hf.RemoteEntryNotFoundError as exc:
        raise CheckpointError(f"cannot {action} {ref}: the repository has no file {_missing_file(exc)!r}") from None
    except hf.IncompleteSnapshotError:
        raise HubUnavailableError(f"cannot {action} {ref}: only part of it is in the local cache (an earlier "
                              "download was cut off) and the Hub cannot be reached; pull it again online") from None
    except hf.OfflineModeIsEnabled:  # raised before any request, e.g. when pushing
        raise HubUnavailableError(f"cannot {action} {ref}: HF_HUB_OFFLINE is set, so the Hub is not contacted") from None
    except hf.LocalEntryNotFoundError:
        if is_offline():
            raise HubUnavailableError(f"cannot {action} {ref}: it is not in the local Hugging Face cache and "
                                      "HF_HUB_OFFLINE is set; pull it once while online") from None
        raise HubUnavailableError(f"cannot {action} {ref}: the Hub at {endpoint()} cannot be reached and it is "
                                  "not in the local cache") from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            raise CheckpointError(f"the Hub refused to {action} {ref} (HTTP {status}): log in with "
                                  "`hf auth login` or set HF_TOKEN to a token with write access") from None
        detail = exc.server_message or _first_line(exc)
        raise CheckpointError(f"cannot {action} {ref}: the Hub answered HTTP {status} ({detail})") from None
    except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError) as exc:
        raise CheckpointError(f"cannot {action} {ref}: the connection broke off mid-transfer ({_first_line(exc)}); "
                              "nothing partial was kept, run it again") from None
    except (httpx2.HTTPError, ConnectionError) as exc:
        raise HubUnavailableError(f"cannot {action} {ref}: the Hub at {endpoint()} cannot be reached "
                                  f"({_first_line(exc)})") from None
    except OSError as exc:
        if "Consistency check failed" in str(exc):  # fewer bytes arrived than announced
            raise CheckpointError(f"cannot {action} {ref}: the download was cut short; nothing partial was "
                                  "kept, run it again") from None
        raise CheckpointError(f"cannot {action} {ref}: {_first_line(exc)}") from None
