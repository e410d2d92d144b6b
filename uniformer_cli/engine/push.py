"""`uniformer push WEIGHTS REPO_ID`: a trained or converted model to a Hugging Face Hub model repository.

The repository gets the safetensors file unchanged, as `model.safetensors` (`weights.hub.HUB_MODEL_FILE`:
the file `--model REPO_ID` loads), and a model card `README.md` (`engine.cards.hub_card`), in one commit
through huggingface_hub's upload API (`HfApi.create_repo`, `create_branch`, `create_commit`), so its
settings apply unchanged: the token of `hf auth login` or `HF_TOKEN`, `HF_ENDPOINT`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from uniformer_cli.engine.cards import Evaluation, hub_card
from uniformer_cli.errors import UniformerError, first_line
from uniformer_cli.jsonio import read_json
from uniformer_cli.settings import DEFAULT_LICENSE
from uniformer_cli.version import __version__
from uniformer_cli.weights import resolve_model
from uniformer_cli.weights.header import CONFIG_KEY, read_metadata
from uniformer_cli.weights.hub import HUB_MODEL_FILE, is_hub_repo_id

log = logging.getLogger(__name__)

CARD_FILE = "README.md"


@dataclass(frozen=True)
class PushRequest:
    weights: Path
    repo_id: str
    private: bool = False  # applies when the repository is created
    revision: str | None = None  # the branch to commit to (created from main when missing); None: main
    commit_message: str | None = None
    eval_file: Path | None = None  # an `uniformer eval -o FILE.json` report whose figures the card quotes
    license: str = DEFAULT_LICENSE


@dataclass(frozen=True)
class PushReport:
    repo: str
    url: str  # the repository's page
    revision: str
    commit: str  # the commit created
    commit_url: str
    files: list[str]  # the paths written in the repository
    weights: Path
    private: bool
    card: str


def read_evaluation(path: Path) -> Evaluation:
    """The figures of an `uniformer eval -o FILE.json` report (its `summary`, docs/OUTPUT.md); a report
    of an unfinished run (`complete: false`) is refused."""
    try:
        summary = read_json(path)["summary"]
        evaluation = Evaluation(
            dataset=str(summary["dataset"]),
            split=str(summary["split"]),
            top1=_percentage(summary["top1"]),
            top5=_percentage(summary["top5"]),
            mean_class=_percentage(summary["mean_class"]),
            videos=int(summary["counted"]),
            protocol_text=str(summary["protocol_text"]),
        )
    except OSError as error:
        raise UniformerError(f"cannot read --eval {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise UniformerError(
            f"--eval {path} is not an evaluation report of `uniformer eval -o FILE.json` ({first_line(error)})"
        ) from None
    if summary.get("complete") is not True:
        raise UniformerError(
            f"--eval {path} is the report of an unfinished run: finish it with `uniformer eval --resume`"
        )
    return evaluation


def _percentage(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"{value!r} is not a percentage")
    return float(value)


def push_model(request: PushRequest) -> PushReport:
    """Upload `request.weights` with its model card to `request.repo_id` (module doc), after checking, before
    any request, that the file is a converted uniformer model that loads, that the eval report reads, and
    that a token is at hand."""
    repo = request.repo_id
    if not is_hub_repo_id(repo):
        raise UniformerError(
            f"{repo!r} is not a Hub model repository id: NAMESPACE/NAME (your user or organisation, then the "
            "name; letters, digits, '-', '_', '.')"
        )
    if request.weights.suffix.lower() != ".safetensors":
        raise UniformerError(
            f"push uploads a converted .safetensors file; convert {request.weights} first "
            "(`uniformer convert FILE.pth FILE.safetensors --model ZOO_NAME`)"
        )
    if CONFIG_KEY not in read_metadata(request.weights):
        raise UniformerError(
            f"{request.weights} was not written by uniformer (its metadata has no {CONFIG_KEY}): convert the "
            "original checkpoint with `uniformer convert`"
        )
    loaded = resolve_model(request.weights, device="cpu")  # every tensor checked
    if loaded.protocol is None:
        raise UniformerError(
            f"{request.weights} carries no test protocol, so `--model {repo}` could not sample videos: convert it "
            "with --model ZOO_NAME (or train it with `uniformer train`, which records one)"
        )
    evaluation = read_evaluation(request.eval_file) if request.eval_file is not None else None
    if constants.HF_HUB_OFFLINE:
        raise UniformerError("HF_HUB_OFFLINE is set: push needs the network")
    if get_token() is None:
        raise UniformerError(
            "push needs a Hugging Face token with write access: log in (`hf auth login`, or `huggingface-cli "
            "login` on older releases) or set HF_TOKEN"
        )
    card = hub_card(loaded, loaded.protocol, repo, evaluation, request.license)
    revision = request.revision or constants.DEFAULT_REVISION
    message = request.commit_message or f"Upload {request.weights.name} with uniformer {__version__}"
    api = HfApi()
    with _push_errors(repo, revision):
        url = api.create_repo(repo, private=request.private, repo_type="model", exist_ok=True)
        if revision != constants.DEFAULT_REVISION:
            api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
        log.info("uploading %s to %s (revision %s)", request.weights, repo, revision)
        commit = api.create_commit(
            repo,
            operations=[
                CommitOperationAdd(HUB_MODEL_FILE, str(request.weights)),
                CommitOperationAdd(CARD_FILE, card.encode()),
            ],
            commit_message=message,
            revision=revision,
            repo_type="model",
        )
    return PushReport(
        repo=repo,
        url=str(url),
        revision=revision,
        commit=commit.oid,
        commit_url=commit.commit_url,
        files=[HUB_MODEL_FILE, CARD_FILE],
        weights=request.weights,
        private=request.private,
        card=card,
    )


@contextlib.contextmanager
def _push_errors(repo: str, revision: str) -> Iterator[None]:
    """huggingface_hub's failures during an upload as one `UniformerError` line each."""
    try:
        yield
    except RevisionNotFoundError:
        raise UniformerError(f"revision {revision!r} of {repo} cannot be committed to") from None
    except RepositoryNotFoundError:
        raise UniformerError(f"Hub repository {repo} was not found, or the token cannot see it") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise UniformerError(
                "the Hub refused the token (401): log in again (`hf auth login`) or set HF_TOKEN to a valid token"
            ) from None
        if status == 403:
            raise UniformerError(f"the token may not write to {repo} (403): use a token with write access") from None
        raise UniformerError(f"push to {repo} failed: {first_line(error)}") from None
    except ValueError as error:  # README metadata the Hub refused, malformed answers
        raise UniformerError(f"push to {repo} failed: {first_line(error)}") from None
    except OSError as error:  # connection failures (requests' and httpx's errors are OSErrors), unreadable file
        raise UniformerError(
            f"push to {repo} failed: could not reach the Hub ({constants.ENDPOINT}): {first_line(error)}"
        ) from None
