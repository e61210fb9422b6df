"""A 256 MiB object goes up and comes back through streams, in bounded memory.

The round trip runs in a child process that reports its own peak RSS, so nothing else the test
session holds is counted. The peak is VmHWM from /proc: getrusage's ru_maxrss would also count
the forked test process before exec (Linux carries the high-water mark across execve).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from objects_support import S3_ENV

pytest_plugins = ["objects_fixtures"]  # the moto server fixture

SIZE = 256 << 20
RSS_LIMIT = 160 << 20  # far below the object: a few parts in flight plus the interpreter

CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from riverfs.objects import Client

    url, bucket, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    block = bytes(range(256)) * 4096  # 1 MiB

    def source():
        for i in range(size // len(block)):
            yield i.to_bytes(8, "little") + block[8:]

    sent = hashlib.sha256()
    for part in source():
        sent.update(part)
    with Client(url) as c:
        try:
            c.create_bucket(bucket)
        except Exception:
            pass
        c.put_object(bucket, "big", source())
        head = c.head_object(bucket, "big")
        got = hashlib.sha256()
        n = 0
        for part in c.iter_object(bucket, "big"):
            got.update(part)
            n += len(part)
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"same": got.hexdigest() == sent.hexdigest(), "length": n,
                      "head": head.content_length, "peak": peak}))
    """
)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_256_mib_round_trip_streams_in_bounded_memory(kind, tmp_path, request):
    import os

    env = {**os.environ, **S3_ENV}
    if kind == "file":
        url = f"file://{tmp_path}/root"
    else:
        url = request.getfixturevalue("moto_server").url()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url, "big-object", str(SIZE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same"] and result["length"] == result["head"] == SIZE
    assert result["peak"] < RSS_LIMIT, f"peak RSS {result['peak'] >> 20} MiB"
