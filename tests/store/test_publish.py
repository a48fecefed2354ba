"""Publishing to a real S3 server: content-named objects, the card as the one commit, no-op re-publish,
clashes, races, a publisher killed before its commit, gc, and the CLI verbs on s3:// URLs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from pipelines.errors import PublishError, StoreError
from pipelines.io.hashing import sha256_file
from pipelines.io.publish_store import gc_store, publish_to_store, read_store_card, version_names
from pipelines.io.shards import read_card
from pipelines.io.store import S3Url, list_objects
from schemas.layout import DATASET_CARD, OBJECTS_DIR


def _clone_with_build(local, tmp_path, build_id: str, name: str = "v1"):
    """A copy of a version whose card says another build (the files are the same)."""
    other = tmp_path / "store" / name
    shutil.copytree(local, other, copy_function=os.link)
    (other / DATASET_CARD).unlink()
    card = read_card(local).model_copy(update={"build_id": build_id})
    (other / DATASET_CARD).write_text(card.to_json())
    return other


def test_build_publishes_content_named_objects_and_the_card_last(published, client):
    url = S3Url.parse(published["url"])
    card = read_store_card(client, url)
    local = read_card(published["local"])
    assert card.build_id == local.build_id and card.version == "v1"
    files = sorted(p.relative_to(published["local"]).as_posix() for p in published["local"].rglob("*")
                   if p.is_file() and p.name != DATASET_CARD)
    assert sorted(card.objects) == files  # every file of the version, nothing else
    for rel, obj in card.objects.items():
        assert obj.sha256 == sha256_file(published["local"] / rel)
        assert obj.key == f"{OBJECTS_DIR}/{obj.sha256}{os.path.splitext(rel)[1]}"
    # the version folder in the store holds only its card: everything else is an immutable object
    assert list(list_objects(client, url, url.key() + "/")) == [url.key(DATASET_CARD)]
    assert version_names(client, url.parent()) == ["v1"]
    lineage = published["manifests"] / "store" / "v1"  # --manifests: the store's card, by the store's name
    assert read_card(lineage).objects == card.objects and (lineage / "manifest.csv").is_file()


def test_republish_sends_nothing_and_a_rebuild_is_a_noop(published, capsys):
    from pipelines.cli import main

    again = publish_to_store(published["local"], "s3://spineforge/team")
    assert (again.published, again.uploaded_objects, again.uploaded_bytes) == (False, 0, 0)
    assert again.url == published["url"]
    assert main(["build", "--config", str(published["config"]), "--input", str(published["inputs"]),
                 "--out", "s3://spineforge/team", "--work", str(published["work"])]) == 0
    assert "already published (no-op): s3://spineforge/team/store/v1" in capsys.readouterr().out


def test_a_clash_with_another_build_is_refused(published, tmp_path, capsys):
    from pipelines.cli import main

    other = _clone_with_build(published["local"], tmp_path, "0" * 16)
    with pytest.raises(PublishError, match="already published with build_id"):
        publish_to_store(other, "s3://spineforge/team", version="v1")
    assert main(["publish", str(other), "s3://spineforge/team", "--version", "v1"]) == 2
    assert "immutable" in capsys.readouterr().err


def test_racing_publishers_exactly_one_wins(published, tmp_path, client):
    racers = [_clone_with_build(published["local"], tmp_path / f"r{i}", f"{i:016d}") for i in range(4)]
    barrier, outcomes = threading.Barrier(len(racers)), {}

    def race(i):
        barrier.wait()
        try:
            outcomes[i] = publish_to_store(racers[i], "s3://spineforge/race", version="v1").published
        except PublishError as exc:
            outcomes[i] = str(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, o in outcomes.items() if o is True]
    assert len(winners) == 1, outcomes
    assert all("published it first" in o for i, o in outcomes.items() if i not in winners)
    card = read_store_card(client, S3Url.parse("s3://spineforge/race/store/v1"))
    assert card.build_id == f"{winners[0]:016d}"


KILLER = """
import os, signal, sys
import pipelines.io.publish_store as ps
real, sent = ps.upload_file_if_absent, []
def upload(*args, **kwargs):
    if len(sent) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # dies with 3 objects sent, before the commit
    sent.append(1)
    return real(*args, **kwargs)
ps.upload_file_if_absent = upload
ps.publish_to_store(sys.argv[1], sys.argv[2], threads=1)
"""


def test_a_publisher_killed_before_its_commit_leaves_nothing_visible(published, tmp_path, client):
    target = "s3://spineforge/killed"
    run = subprocess.run([sys.executable, "-c", KILLER, str(published["local"]), target], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    url = S3Url.parse(target)
    assert version_names(client, url.child("store")) == []
    assert len(list_objects(client, url, url.key("store", OBJECTS_DIR) + "/")) == 3
    with pytest.raises(StoreError, match="no published version"):
        from pipelines.loaders.datasets import VertebraDataset

        VertebraDataset(f"{target}/store/v1", cache_dir=tmp_path / "cache")
    again = publish_to_store(published["local"], target)
    total = len(read_store_card(client, url.child("store", "v1")).objects)
    assert again.published and (again.present_objects, again.uploaded_objects) == (3, total - 3)


def test_cli_inspect_diff_validate_on_s3(published, capsys):
    from pipelines.cli import main

    url = published["url"]
    assert main(["inspect", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["card"]["build_id"] == read_card(published["local"]).build_id
    assert main(["diff", str(published["local"]), url]) == 0
    assert "identical build_id" in capsys.readouterr().out
    assert main(["validate", url]) == 0
    assert f"OK {url}" in capsys.readouterr().out


def test_validate_and_loaders_refuse_a_tampered_object(published, tmp_path, client, capsys):
    from pipelines.cli import main
    from pipelines.loaders.datasets import VertebraDataset

    target = "s3://spineforge/tamper"
    publish_to_store(published["local"], target)
    url = S3Url.parse(target).child("store", "v1")
    card = read_store_card(client, url)
    rel, obj = next((r, o) for r, o in card.objects.items() if r.startswith("shards/vertebra"))
    data = bytearray((published["local"] / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    client.put_object(Bucket="spineforge", Key=url.parent().key(obj.key), Body=bytes(data))  # behind our back
    assert main(["validate", str(url)]) == 1
    assert "sha256" in capsys.readouterr().err
    dataset = VertebraDataset(str(url), cache_dir=tmp_path / "cache")
    index = next(i for i, r in enumerate(dataset.rows) if f"shards/{r['shard']}" == rel)
    with pytest.raises(StoreError, match="changed or corrupted"):
        dataset[index]
    assert not dataset.version.cache.path(obj).exists()  # never entered the cache
    assert not list((tmp_path / "cache" / "partial").glob("*"))


def test_gc_removes_old_versions_and_only_their_objects(published, tmp_path, client, capsys):
    from pipelines.cli import main

    target = "s3://spineforge/gc"
    publish_to_store(published["local"], target)
    second = _clone_with_build(published["local"], tmp_path, "1" * 16, "v2")
    (second / "report.html").unlink()
    (second / "report.html").write_text("<html>another report</html>")  # one object only v2 holds
    publish_to_store(second, target)
    dataset = S3Url.parse(target).child("store")
    before = list_objects(client, dataset, dataset.key(OBJECTS_DIR) + "/")
    assert main(["gc", str(dataset), "--keep", "1", "--grace-hours", "0"]) == 0
    assert "removed 1 version(s) (v1)" in capsys.readouterr().out
    after = list_objects(client, dataset, dataset.key(OBJECTS_DIR) + "/")
    assert len(before) - len(after) == 1  # v1's own report; every shared object stays
    assert version_names(client, dataset) == ["v2"]
    assert main(["validate", str(dataset.child("v2"))]) == 0
    kept = gc_store(dataset, 1, 0.0)
    assert (kept.removed, kept.deleted_objects) == ([], 0)


def test_credentials_errors_are_clear_and_never_printed(published, monkeypatch, capsys):
    from pipelines.cli import main

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert main(["inspect", published["url"]]) == 0
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" + secret)
    assert main(["inspect", published["url"]]) == 2
    err = capsys.readouterr().err
    assert "secret key does not match" in err and secret not in err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert main(["inspect", published["url"]]) == 2
    assert "no credentials" in capsys.readouterr().err


def test_credentials_from_a_profile_and_the_endpoint_from_an_option(published, s3_server, monkeypatch, tmp_path,
                                                                   capsys):
    from pipelines.cli import main

    credentials = tmp_path / "credentials"
    credentials.write_text(f"[team]\naws_access_key_id = {s3_server.access_key}\n"
                           f"aws_secret_access_key = {s3_server.secret_key}\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    assert main(["inspect", published["url"], "--profile", "team", "--endpoint-url", s3_server.endpoint]) == 0
    assert "store v1" in capsys.readouterr().out
    assert main(["inspect", published["url"], "--profile", "nobody", "--endpoint-url", s3_server.endpoint]) == 2
    assert "AWS profile 'nobody'" in capsys.readouterr().err
    monkeypatch.setenv("AWS_PROFILE", "team")  # the profile from the environment, the endpoint from the config file
    (tmp_path / "no-config").write_text(f"[profile team]\nendpoint_url = {s3_server.endpoint}\n")
    assert main(["validate", published["url"]]) == 0
