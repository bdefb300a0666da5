"""Hub downloads through the real ``huggingface_hub`` client against the fake Hub in tests/hub_server.py.

Every test starts its own server on 127.0.0.1 (random ports), points ``HF_ENDPOINT`` and ``HF_HUB_CACHE``
at it and at a temporary cache, and stops it at the end. The client's retry back-off sleeps are replaced by
a recorder so that failure cases take milliseconds; the server's request budget bounds any retry loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_run import run_cli  # noqa: E402
from hub_server import FakeHub  # noqa: E402

from fmanetpp_cli.checkpoints import hub, resolve, zoo  # noqa: E402
from fmanetpp_cli.errors import ChecksumError, HubError, WeightsNotFoundError  # noqa: E402

REPO = "fmanetpp-tests/tiny"
FILE = "model.safetensors"


def _payload(seed: int, size: int = 48_000) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A started fake Hub with HF_ENDPOINT / HF_HUB_CACHE pointing at it and a fresh cache."""
    import huggingface_hub.utils._http as hf_http

    server = FakeHub(max_requests=120).start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")  # never read a real token file
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    sleeps: list[float] = []
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: sleeps.append(s))
    server.sleeps = sleeps  # type: ignore[attr-defined]
    hf_http.close_session()
    try:
        yield server
    finally:
        server.stop()
        hf_http.close_session()


def _cache_files(tmp_path: Path) -> list[Path]:
    """Every file or link in the cache except locks, refs, the cache tag and empty ``.no_exist`` markers."""
    root = tmp_path / "hf-cache"
    if not root.exists():
        return []
    return [
        p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink())
        and ".locks" not in p.parts
        and p.name != "CACHEDIR.TAG"
        and "refs" not in p.parts
        and ".no_exist" not in p.parts
    ]


def test_first_download_then_cache_hit_without_network(fake_hub: FakeHub) -> None:
    data = _payload(1)
    fake_hub.commit(REPO, {FILE: data, "README.md": b"# tiny\n"})
    path = hub.fetch(REPO, FILE, sha256=_sha(data))
    assert path.read_bytes() == data
    assert fake_hub.count(method="GET", contains="/blobs/") == 1
    before = len(fake_hub.requests)
    again = hub.fetch(REPO, FILE, sha256=_sha(data))
    assert again == path
    assert len(fake_hub.requests) == before, "a cached file must be used without asking the Hub"


def test_offline_env_and_flag_use_the_cache_only(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _payload(2)
    fake_hub.commit(REPO, {FILE: data})
    path = hub.fetch(REPO, FILE)
    fake_hub.stop()  # from here on any network use would fail
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.fetch(REPO, FILE, prefer_cache=False) == path
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub.fetch(REPO, FILE, offline=True, prefer_cache=False) == path
    with pytest.raises(WeightsNotFoundError, match=r"offline") as info:
        hub.fetch(REPO, "other.safetensors", offline=True)
    assert REPO in str(info.value) and "other.safetensors" in str(info.value)


def test_offline_miss_makes_no_request(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.commit(REPO, {FILE: _payload(3)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    with pytest.raises(WeightsNotFoundError, match="offline"):
        hub.fetch(REPO, FILE)
    assert fake_hub.requests == []


def test_pinned_revision_gets_that_commit(fake_hub: FakeHub) -> None:
    old, new = _payload(10), _payload(11)
    first = fake_hub.commit(REPO, {FILE: old})
    fake_hub.commit(REPO, {FILE: new})
    assert hub.fetch(REPO, FILE, revision=first).read_bytes() == old
    assert hub.fetch(REPO, FILE).read_bytes() == new
    before = len(fake_hub.requests)
    # A commit hash that is cached is served without any request, even when asking the Hub first.
    assert hub.fetch(REPO, FILE, revision=first, prefer_cache=False).read_bytes() == old
    assert len(fake_hub.requests) == before
    with pytest.raises(WeightsNotFoundError, match="revision"):
        hub.fetch(REPO, FILE, revision="no-such-branch")


def test_checksum_mismatch_is_refused_and_not_used_from_cache(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = _payload(20)
    fake_hub.commit(REPO, {FILE: data})
    wrong = _sha(b"something else")
    with pytest.raises(ChecksumError, match=REPO):
        hub.fetch(REPO, FILE, sha256=wrong)
    assert _cache_files(tmp_path) == [], "the refused download must not stay in the cache"
    assert hub.cached(REPO, FILE) is None
    with pytest.raises(WeightsNotFoundError):
        hub.fetch(REPO, FILE, sha256=_sha(data), offline=True)
    # The right checksum downloads it again and accepts it.
    assert hub.fetch(REPO, FILE, sha256=_sha(data)).read_bytes() == data


def test_corrupted_transfer_is_caught_by_the_checksum(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = _payload(21)
    fake_hub.commit(REPO, {FILE: data})
    fake_hub.fail(FILE, "corrupt", times=1)
    with pytest.raises(ChecksumError):
        hub.fetch(REPO, FILE, sha256=_sha(data))
    assert _cache_files(tmp_path) == []
    assert hub.fetch(REPO, FILE, sha256=_sha(data)).read_bytes() == data


def test_zoo_entry_with_wrong_sha_is_refused(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _payload(22)
    commit = fake_hub.commit(REPO, {FILE: data})
    good = zoo.WeightSpec(
        name="hub-test", arch="fmanetpp", config="fmanetpp-tiny", filename=FILE, repo_id=REPO,
        revision=commit, sha256=_sha(data),
    )  # fmt: skip
    bad = zoo.WeightSpec(
        name="hub-bad", arch="fmanetpp", config="fmanetpp-tiny", filename=FILE, repo_id=REPO,
        revision=commit, sha256=_sha(b"x"),
    )  # fmt: skip
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**zoo.ZOO, good.name: good, bad.name: bad}))
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(Path(os.devnull).parent / "nonexistent-fmanetpp"))
    with pytest.raises(ChecksumError):
        resolve.resolve_weights("hub-bad")
    path = resolve.resolve_weights("hub-test")
    assert path.read_bytes() == data
    fake_hub.stop()
    assert resolve.resolve_weights("hub-test", offline=True) == path


@pytest.mark.parametrize(
    ("repo", "filename", "revision", "needle"),
    [
        (REPO, "missing.safetensors", None, "no file 'missing.safetensors'"),
        ("fmanetpp-tests/absent", FILE, None, "no repository"),
        (REPO, FILE, "v9", "revision 'v9'"),
    ],
)
def test_not_found_errors_name_repo_and_file(
    fake_hub: FakeHub, tmp_path: Path, repo: str, filename: str, revision: str | None, needle: str
) -> None:
    fake_hub.commit(REPO, {FILE: _payload(30)})
    with pytest.raises(WeightsNotFoundError, match=needle) as info:
        hub.fetch(repo, filename, revision=revision)
    assert repo in str(info.value) and filename in str(info.value)
    assert not [p for p in _cache_files(tmp_path) if p.suffix == ".safetensors" or "blobs" in p.parts]


def test_404_failure_mode(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.commit(REPO, {FILE: _payload(31)})
    fake_hub.fail(FILE, "404")
    with pytest.raises(WeightsNotFoundError, match=FILE):
        hub.fetch(REPO, FILE)
    assert not [p for p in _cache_files(tmp_path) if "blobs" in p.parts or "snapshots" in p.parts]


def test_server_error_is_a_hub_error_and_leaves_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.commit(REPO, {FILE: _payload(40)})
    fake_hub.fail(FILE, "500")
    with pytest.raises(HubError, match="HTTP 500") as info:
        hub.fetch(REPO, FILE)
    assert REPO in str(info.value) and FILE in str(info.value)
    assert fake_hub.sleeps, "the client should have retried with back-off"  # type: ignore[attr-defined]
    assert fake_hub.count(contains="/resolve/") <= 10
    assert _cache_files(tmp_path) == []


def test_dropped_connection_leaves_no_loadable_file(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = _payload(50)
    fake_hub.commit(REPO, {FILE: data})
    fake_hub.fail(FILE, "drop")
    started = time.monotonic()
    with pytest.raises(HubError, match="connection .* dropped") as info:
        hub.fetch(REPO, FILE, sha256=_sha(data))
    assert time.monotonic() - started < 30
    assert REPO in str(info.value) and FILE in str(info.value)
    assert fake_hub.count(contains="/blobs/") >= 2, "the client should have tried to resume"
    leftovers = [p for p in _cache_files(tmp_path) if "blobs" in p.parts or "snapshots" in p.parts]
    assert leftovers == [], f"partial download left behind: {leftovers}"
    with pytest.raises(WeightsNotFoundError):
        hub.fetch(REPO, FILE, offline=True)


def test_dropped_connection_once_resumes_to_the_right_bytes(fake_hub: FakeHub) -> None:
    data = _payload(51)
    fake_hub.commit(REPO, {FILE: data})
    fake_hub.fail(FILE, "drop_once", times=1)
    path = hub.fetch(REPO, FILE, sha256=_sha(data))
    assert path.read_bytes() == data
    assert fake_hub.count(contains="/blobs/") == 2


def test_repo_id_resolution_picks_the_only_safetensors(fake_hub: FakeHub) -> None:
    data = _payload(60)
    fake_hub.commit(REPO, {"fmanetpp-x.safetensors": data, "README.md": b"card"})
    path = resolve.resolve_weights(REPO)
    assert path.name == "fmanetpp-x.safetensors" and path.read_bytes() == data
    fake_hub.stop()
    assert resolve.resolve_weights(REPO, offline=True) == path


def test_repo_id_with_several_weights_needs_a_filename(fake_hub: FakeHub) -> None:
    fake_hub.commit(REPO, {"a.safetensors": _payload(61), "b.safetensors": _payload(62)})
    with pytest.raises(WeightsNotFoundError, match="--filename"):
        resolve.resolve_weights(REPO)
    assert resolve.resolve_weights(REPO, filename="b.safetensors").read_bytes() == _payload(62)
    fake_hub.commit(REPO, {"model.safetensors": _payload(63)})
    assert resolve.resolve_weights(REPO).name == "model.safetensors"


# ----------------------------------------------------------------------------------------------------------
# The commands: fmanetpp download / models / weights push, against the same fake Hub


def test_download_command_online_offline_and_checksum(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _payload(70)
    commit = fake_hub.commit(REPO, {FILE: data})
    code, out, _ = run_cli(["download", REPO, "--sha256", _sha(data)], capsys)
    assert code == 0 and Path(out.strip()).read_bytes() == data
    code, out, _ = run_cli(["download", REPO, "--revision", commit, "--filename", FILE], capsys)
    assert code == 0 and Path(out.strip()).read_bytes() == data
    fake_hub.stop()
    for revision in ("main", commit):  # a branch is remembered in refs/, a commit is its own snapshot
        code, out2, _ = run_cli(["download", REPO, "--revision", revision, "--offline", "--json"], capsys)
        assert code == 0 and json.loads(out2)["sha256"] == _sha(data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(["download", REPO, "--filename", "other.safetensors"], capsys)
    assert code == 1 and "offline" in err and len(err.strip().splitlines()) == 1


def test_download_command_refuses_a_wrong_checksum(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.commit(REPO, {FILE: _payload(71)})
    code, out, err = run_cli(["download", REPO, "--sha256", "0" * 64], capsys)
    assert code == 1 and out == ""
    assert "sha256" in err and "not used" in err and len(err.strip().splitlines()) == 1
    assert _cache_files(tmp_path) == []


def test_push_round_trip_with_model_card(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_zoo import write_weights

    from fmanetpp_cli.checkpoints import catalog

    fake_hub.token = "hf_fake_token_for_tests"
    weights = write_weights(
        tmp_path / "trained.safetensors", license="MIT", training=json.dumps({"clips": ["bikes"]})
    )
    code, out, _ = run_cli(
        ["weights", "push", str(weights), "me/fmanetpp-mine", "--metrics", '{"PSNR": 27.5}', "--json"], capsys
    )
    assert code == 0
    result = json.loads(out)
    assert result["sha256"] == _sha(weights.read_bytes()) and re.fullmatch(
        r"[0-9a-f]{40}", result["revision"]
    )
    card = fake_hub.file_at("me/fmanetpp-mine", "main", "README.md").decode()
    assert card.startswith("---\nlicense: mit\n")
    for needle in ("fmanetpp", result["sha256"], "bikes", "PSNR", "27.5", '"dim": 8', "RGB"):
        assert needle in card, needle
    # What was pushed downloads back, pinned, byte for byte, and is listed as downloaded.
    path = resolve.resolve_weights("me/fmanetpp-mine", revision=result["revision"], sha256=result["sha256"])
    assert path.read_bytes() == weights.read_bytes()
    rows = {r.name: r for r in catalog.list_models()}
    assert rows["me/fmanetpp-mine"].kind == "hub-cache" and rows["me/fmanetpp-mine"].available


def test_push_without_write_access_is_one_clear_error(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_zoo import write_weights

    fake_hub.token = "the-real-token"  # ours (HF_TOKEN) is not it
    weights = write_weights(tmp_path / "w.safetensors")
    code, _, err = run_cli(["weights", "push", str(weights), "me/repo"], capsys)
    assert code == 1 and "HTTP 401" in err and "me/repo" in err
    code, _, err = run_cli(["weights", "push", str(tmp_path / "missing.safetensors"), "me/repo"], capsys)
    assert code == 1 and "missing.safetensors" in err


@pytest.mark.slow
def test_end_to_end_push_then_restore_a_folder_with_the_repo_id(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real tiny FMA-Net++ goes up with `weights push`, comes back through `--model owner/name`."""
    import torch
    from media import make_clip

    from fmanetpp_cli.checkpoints import save_model
    from fmanetpp_cli.checkpoints.push import push_weights
    from fmanetpp_cli.models import create_model
    from fmanetpp_cli.video import probe

    torch.manual_seed(0)
    weights = save_model(create_model("fmanetpp-tiny"), tmp_path / "tiny.safetensors")
    fake_hub.token = "hf_fake_token_for_tests"
    pushed = push_weights(weights, "me/tiny")
    src = tmp_path / "clips"
    (src / "day1").mkdir(parents=True)
    make_clip(src / "a.mp4", frames=2, width=16, height=16)
    make_clip(src / "day1" / "b.mkv", frames=2, width=16, height=16)
    argv = ["restore", str(src), str(tmp_path / "out"), "--model", "me/tiny", "--device", "cpu", "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    for rel in ("a.mp4", "day1/b.mkv"):
        info = probe(tmp_path / "out" / rel)
        assert (info.width, info.height) == (64, 64)
    assert hub.cached("me/tiny", "tiny.safetensors", revision=pushed.revision) is not None
    fake_hub.stop()  # the second run needs no network: the weights come from the cache
    code, _, err = run_cli([*argv, "--skip-existing", "--offline"], capsys)
    assert code == 0, err


def test_unreachable_hub_is_a_clear_error(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.stop()  # nothing listens on the port any more
    with pytest.raises(HubError, match="cannot reach") as info:
        hub.fetch(REPO, FILE)
    assert REPO in str(info.value) and fake_hub.endpoint in str(info.value)
    assert _cache_files(tmp_path) == []
