"""The parquet lake: layout, atomic writes, S3 through a local S3-compatible server."""

import os
import stat
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from petrosa_pipelines.lake import STALE_TEMP_SECONDS, LocalLake, S3Lake, lake_path


def frame(n=10):
    return pd.DataFrame({"a": range(n), "b": [float(i) / 3 for i in range(n)]})


def test_layout_is_layer_dataset_exchange_symbol_date():
    assert (
        lake_path("market_data/candles", "binance", "BTCUSDT", "2024-01-02")
        == "market_data/candles/binance/BTCUSDT/2024-01-02.parquet"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("market_data/../x", "binance", "BTCUSDT", "2024-01-02"),
        ("candles", "bin/ance", "BTCUSDT", "2024-01-02"),
        ("candles", "binance", "..", "2024-01-02"),
        ("candles", "binance", "BTCUSDT", "2024-1-2"),
    ],
)
def test_layout_rejects_escaping_names(args):
    with pytest.raises(ValueError):
        lake_path(*args)


def test_local_roundtrip_and_listing(tmp_path):
    lake = LocalLake(tmp_path)
    rel = lake_path("market_data/trades", "binance", "BTCUSDT", "2024-01-02")
    lake.write_frame(rel, frame())
    pd.testing.assert_frame_equal(lake.read_frame(rel), frame())
    assert lake.list("market_data") == [rel]
    with pytest.raises(FileNotFoundError):
        lake.read_frame(lake_path("market_data/trades", "binance", "ETHUSDT", "2024-01-02"))


def test_local_write_is_atomic_for_concurrent_readers(tmp_path):
    """A reader polling while a writer rewrites the file sees a whole old or new frame."""
    lake = LocalLake(tmp_path)
    rel = "x/binance/S/2024-01-01.parquet"
    lake.write_frame(rel, frame(1000))
    stop = threading.Event()
    seen = []

    def read_loop():
        while not stop.is_set():
            seen.append(len(lake.read_frame(rel)))

    reader = threading.Thread(target=read_loop)
    reader.start()
    for i in range(30):
        lake.write_frame(rel, frame(1000 + (i % 2) * 1000))
    stop.set()
    reader.join()
    assert seen and set(seen) <= {1000, 2000}
    leftovers = [p for p in os.listdir(tmp_path / "x/binance/S") if p.startswith(".")]
    assert leftovers == []


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    lake = LocalLake(tmp_path)
    rel = "x/binance/S/2024-01-01.parquet"
    lake.write_frame(rel, frame(5))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        lake.write_frame(rel, frame(50))
    monkeypatch.undo()
    assert len(lake.read_frame(rel)) == 5
    assert [p for p in os.listdir(tmp_path / "x/binance/S") if p.startswith(".")] == []


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_lake_roundtrip(s3_endpoint, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="lake")
    lake = S3Lake(client, "lake", "prod")
    rel = lake_path("market_data/candles", "binance", "BTCUSDT", "2024-01-02")
    assert not lake.exists(rel)
    lake.write_frame(rel, frame())
    assert lake.exists(rel)
    pd.testing.assert_frame_equal(lake.read_frame(rel), frame())
    assert lake.list("market_data") == [rel]
    assert lake.uri(rel) == f"s3://lake/prod/{rel}"
    with pytest.raises(FileNotFoundError):
        lake.read_frame("nope/binance/X/2024-01-01.parquet")


def test_io_manager_writes_partitions_to_s3(s3_endpoint, monkeypatch):
    """The lake IO manager on ``s3://bucket/prefix`` (dagster-aws client, AWS_ENDPOINT_URL)."""
    import boto3
    import dagster as dg

    from petrosa_pipelines.market_data.partitions import daily_symbol_partitions
    from resources import LakeIOManager

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="iolake")

    @dg.asset(key=["market_data", "candles"], partitions_def=daily_symbol_partitions)
    def up() -> pd.DataFrame:
        return frame(7)

    @dg.asset(
        partitions_def=daily_symbol_partitions, ins={"up": dg.AssetIn(["market_data", "candles"])}
    )
    def down(up: pd.DataFrame) -> None:
        assert len(up) == 7

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
        result = dg.materialize(
            [up, down],
            partition_key="2024-01-02|BTCUSDT",
            resources={"io_manager": LakeIOManager(base_path="s3://iolake/prod")},
            instance=instance,
        )
    assert result.success
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="iolake")["Contents"]]
    assert keys == ["prod/market_data/candles/binance/BTCUSDT/2024-01-02.parquet"]


# -- issue 11 item 20: file modes and orphaned temporary files ---------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_lake_files_get_the_mode_of_a_normal_file(tmp_path, umask, mode):
    """mkstemp made every lake file 0600: unreadable to the serving user of a shared lake."""
    previous = os.umask(umask)
    try:
        lake = LocalLake(tmp_path)
        rel = lake_path("market_data/trades", "binance", "BTCUSDT", "2024-01-02")
        lake.write_frame(rel, frame())
        lake.write_frame(rel, frame(3))  # a rewrite too
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / rel).stat().st_mode) == mode


_CHILD = """
import os, sys, time
from petrosa_pipelines.lake import LocalLake

def hang(src, dst):  # the kill lands between the temporary file and the rename
    print("written", flush=True)
    time.sleep(600)

os.replace = hang
LocalLake(sys.argv[1]).write_bytes(sys.argv[2], b"x" * 1000)
"""


def test_a_killed_write_leaves_an_orphan_that_the_next_write_removes(tmp_path):
    rel = "market_data/trades/binance/BTCUSDT/2024-01-02.parquet"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), rel],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.kill()  # SIGKILL: no cleanup handler runs
        child.wait(30)
    folder = tmp_path / "market_data/trades/binance/BTCUSDT"
    [orphan] = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # a write still in progress elsewhere (young) and files not ours stay untouched
    young = folder / ".2024-01-03.parquet.0123456789abcdef.tmp"
    young.write_bytes(b"in progress")
    foreign = folder / "notes.tmp"
    foreign.write_bytes(b"not ours")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(orphan, (old, old))
    os.utime(foreign, (old, old))

    LocalLake(tmp_path).write_frame(rel.replace("01-02", "01-04"), frame())

    names = sorted(p.name for p in folder.iterdir())
    assert orphan.name not in names
    assert young.name in names and "notes.tmp" in names and "2024-01-04.parquet" in names


def test_maintenance_sweep_removes_orphans_in_every_directory(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_frame("x/binance/A/2024-01-01.parquet", frame())
    old = time.time() - STALE_TEMP_SECONDS - 60
    orphans = [
        tmp_path / "x/binance/A/.2024-01-01.parquet.k3j_x9q2.tmp",  # mkstemp naming (old code)
        tmp_path / "y/binance/B/.2024-01-02.parquet.00112233445566ff.tmp",
    ]
    for p in orphans:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    assert sorted(lake.clean_temp_files()) == sorted(orphans)
    assert not any(p.exists() for p in orphans)
    assert lake.read_frame("x/binance/A/2024-01-01.parquet").shape == frame().shape


def test_s3_lake_reads_days_of_a_compacted_month(s3_endpoint, monkeypatch):
    """The month file on S3: listed as its days, each read from its row group; the day
    objects are deleted only once the month object is stored."""
    import boto3

    from petrosa_pipelines.market_data.compaction import COMPACTED, compact_month

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="compact")
    lake = S3Lake(client, "compact", "prod")
    days = [f"2024-02-{d:02d}" for d in range(1, 6)]
    frames = {d: frame(3 + i) for i, d in enumerate(days)}
    for d in days:
        lake.write_frame(lake_path("market_data/candles", "binance", "BTCUSDT", d), frames[d])
    folder = "market_data/candles/binance/BTCUSDT"
    done = compact_month(lake, folder, "2024-02", 1 << 20)
    assert done.status == COMPACTED and done.files_after == 1
    assert lake.list_files("market_data") == [f"{folder}/2024-02.parquet"]
    assert lake.list("market_data") == [f"{folder}/{d}.parquet" for d in days]
    for d in days:
        rel = f"{folder}/{d}.parquet"
        pd.testing.assert_frame_equal(lake.read_frame(rel), frames[d])
        assert lake.num_rows(rel) == len(frames[d]) and lake.exists(rel)
