"""`riverfs obj`: buckets and objects from the command line, through the SDK.

    riverfs obj --store s3://?endpoint=http://127.0.0.1:9000 mb photos
    riverfs obj put ./cat.jpg s3://photos/2024/cat.jpg
    riverfs obj ls s3://photos/2024/
    riverfs obj --store file:///data/store get photos/2024/cat.jpg ./cat.jpg

An object is named `bucket/key`, or `s3://bucket/key` (also gs://, az://). `--store` (or
RIVERFS_STORE) names the store; without it, a scheme in the name picks the service, with the
endpoint from `--endpoint`, the profile or AWS_ENDPOINT_URL. Errors are one line and exit 1.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import click

from riverfs.cli.defaults import human_size
from riverfs.errors import RiverError
from riverfs.objects import Client, ListObjectsOptions, RetryPolicy
from riverfs.objects.store import CommonPrefix

PROGRESS_MIN = 4 << 20  # transfers at least this big get a progress bar
_REMOTE_SCHEMES = ("s3://", "gs://", "az://")


class Ctx:
    def __init__(self, store, profile, endpoint, region, retries, quiet) -> None:
        self.store = store
        self.profile = profile
        self.endpoint = endpoint
        self.region = region
        self.retries = retries
        self.quiet = quiet
        self._client: Client | None = None

    def ref(self, text: str) -> tuple[str, str]:
        """'bucket/key' or 's3://bucket/key' -> (bucket, key); opens the client on first use."""
        scheme = next((s for s in _REMOTE_SCHEMES if text.startswith(s)), None)
        if scheme:
            text = text[len(scheme) :]
        if self._client is None:
            self._client = self._open(scheme)
        bucket, _, key = text.partition("/")
        if not bucket:
            raise RiverError(f"{text!r} names no bucket: write bucket/key or s3://bucket/key")
        return bucket, key

    def _open(self, scheme: str | None) -> Client:
        url = self.store
        if not url:
            if not scheme:
                raise RiverError(
                    "which store? pass --store URL (or set RIVERFS_STORE), "
                    "or name objects as s3://bucket/key"
                )
            query = {k: v for k, v in (("endpoint", self.endpoint), ("region", self.region)) if v}
            url = scheme + ("?" + urlencode(query, safe=":/") if query else "")
        elif self.endpoint or self.region:
            raise RiverError("--endpoint/--region go with s3:// names; put them in --store instead")
        retry = RetryPolicy(max_attempts=self.retries) if self.retries else None
        return Client(url, profile=self.profile, retry=retry)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._open(None)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@contextmanager
def _progress(ctx: Ctx, label: str, total: int | None):
    """A rich progress bar on stderr for big transfers; yields the byte-count callback."""
    if ctx.quiet or (total is not None and total < PROGRESS_MIN):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@click.group("obj")
@click.option("--store", envvar="RIVERFS_STORE", help="Store URL: s3://?endpoint=..., file:///dir")
@click.option("--profile", help="Profile of ~/.config/riverfs/credentials.toml.")
@click.option("--endpoint", help="S3 endpoint for s3:// names (e.g. http://127.0.0.1:9000).")
@click.option("--region", help="S3 region for s3:// names.")
@click.option("--retries", type=click.IntRange(1, 100), help="Attempts per request (default 5).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def obj(ctx, store, profile, endpoint, region, retries, quiet) -> None:
    """Buckets and objects: mb, rb, ls, put, get, rm, cp, stat."""
    state = Ctx(store, profile, endpoint, region, retries, quiet)
    ctx.obj = state
    ctx.call_on_close(state.close)


pass_ctx = click.make_pass_decorator(Ctx)


@obj.command("mb")
@click.argument("buckets", nargs=-1, required=True)
@pass_ctx
def make_bucket(ctx: Ctx, buckets) -> None:
    """Create buckets."""
    for name in buckets:
        bucket, _ = ctx.ref(name.rstrip("/"))
        ctx.client.create_bucket(bucket)
        click.echo(f"created bucket {bucket}")


@obj.command("rb")
@click.argument("buckets", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Delete the bucket's objects first.")
@pass_ctx
def remove_bucket(ctx: Ctx, buckets, force) -> None:
    """Delete empty buckets (with --force, empty them first)."""
    for name in buckets:
        bucket, _ = ctx.ref(name.rstrip("/"))
        if force:
            _delete_prefix(ctx, bucket, "")
        ctx.client.delete_bucket(bucket)
        click.echo(f"deleted bucket {bucket}")


def _delete_prefix(ctx: Ctx, bucket: str, prefix: str) -> int:
    batch: list[str] = []
    count = 0
    for key in ctx.client.list_objects(bucket, ListObjectsOptions(prefix=prefix)):
        batch.append(key)
        if len(batch) == 1000:
            ctx.client.delete_objects(bucket, batch)
            count += len(batch)
            batch = []
    if batch:
        ctx.client.delete_objects(bucket, batch)
        count += len(batch)
    return count


@obj.command("ls")
@click.argument("where", required=False)
@click.option("-r", "--recursive", is_flag=True, help="Every key under the prefix.")
@click.option("--max-keys", type=int, help="Stop after this many entries.")
@pass_ctx
def list_cmd(ctx: Ctx, where, recursive, max_keys) -> None:
    """List buckets, or the objects of BUCKET[/PREFIX]."""
    if not where or where in _REMOTE_SCHEMES:
        if ctx._client is None:
            ctx._client = ctx._open(where or None)
        for b in ctx.client.list_buckets():
            when = b.creation_date.strftime("%Y-%m-%d %H:%M") if b.creation_date else "-"
            click.echo(f"{when:16}  {b.name}")
        return
    bucket, prefix = ctx.ref(where)
    opts = ListObjectsOptions(
        prefix=prefix, delimiter=None if recursive else "/", max_keys=max_keys
    )
    for entry in ctx.client.list_objects_info(bucket, opts):
        if isinstance(entry, CommonPrefix):
            click.echo(f"{'':16}  {'DIR':>10}  {entry.prefix}")
        else:
            when = entry.last_modified.strftime("%Y-%m-%d %H:%M")
            click.echo(f"{when:16}  {human_size(entry.size):>10}  {entry.key}")


@obj.command("put")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
@click.argument("target")
@click.option("--compress", is_flag=True, help="Store zstd-compressed (read back transparently).")
@click.option("--content-type", help="Content-Type to record.")
@pass_ctx
def put_cmd(ctx: Ctx, source, target, compress, content_type) -> None:
    """Upload a local file (or - for stdin) to BUCKET/KEY (BUCKET/ keeps the file name)."""
    bucket, key = ctx.ref(target)
    if not key or key.endswith("/"):
        if source == "-":
            raise RiverError("uploading stdin needs a key: BUCKET/KEY")
        key += Path(source).name
    if source == "-":
        ctx.client.put_object(
            bucket, key, sys.stdin.buffer, compress=compress, content_type=content_type
        )
        size = None
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise RiverError(f"cannot read {source}: {e.strerror}") from None
        with _progress(ctx, f"put {key}", size) as progress:
            ctx.client.upload_file(
                bucket, key, path, progress=progress, compress=compress, content_type=content_type
            )
    shown = f" ({human_size(size)})" if size is not None else ""
    click.echo(f"uploaded {source} to {bucket}/{key}{shown}", err=source == "-")


@obj.command("get")
@click.argument("source")
@click.argument("target", required=False, type=click.Path(allow_dash=True))
@pass_ctx
def get_cmd(ctx: Ctx, source, target) -> None:
    """Download BUCKET/KEY to TARGET (default: the key's file name; - for stdout)."""
    bucket, key = ctx.ref(source)
    if not key:
        raise RiverError(f"{source!r} names no object: write bucket/key")
    if target == "-":
        out = sys.stdout.buffer
        for part in ctx.client.iter_object(bucket, key):
            out.write(part)
        out.flush()
        return
    dest = Path(target or key.rsplit("/", 1)[-1])
    if dest.is_dir():
        dest = dest / key.rsplit("/", 1)[-1]
    size = ctx.client.head_object(bucket, key).content_length
    with _progress(ctx, f"get {key}", size) as progress:
        ctx.client.download_file(bucket, key, dest, progress=progress)
    click.echo(f"downloaded {bucket}/{key} to {dest} ({human_size(size)})")


@obj.command("rm")
@click.argument("objects", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Delete every key under the prefix.")
@pass_ctx
def remove_cmd(ctx: Ctx, objects, recursive) -> None:
    """Delete objects (a missing object is not an error)."""
    for name in objects:
        bucket, key = ctx.ref(name)
        if recursive:
            n = _delete_prefix(ctx, bucket, key)
            click.echo(f"deleted {n} objects under {bucket}/{key}")
            continue
        if not key:
            raise RiverError(f"{name!r} names a bucket: use rb, or rm -r to empty it")
        ctx.client.delete_object(bucket, key)
        click.echo(f"deleted {bucket}/{key}")


@obj.command("cp")
@click.argument("source")
@click.argument("target")
@pass_ctx
def copy_cmd(ctx: Ctx, source, target) -> None:
    """Copy BUCKET/KEY to BUCKET/KEY inside the store (server-side where possible)."""
    src_bucket, src_key = ctx.ref(source)
    bucket, key = ctx.ref(target)
    if not src_key:
        raise RiverError(f"{source!r} names no object: write bucket/key")
    if not key or key.endswith("/"):
        key += src_key.rsplit("/", 1)[-1]
    ctx.client.copy_object(bucket, f"{src_bucket}/{src_key}", key)
    click.echo(f"copied {src_bucket}/{src_key} to {bucket}/{key}")


@obj.command("stat")
@click.argument("objects", nargs=-1, required=True)
@pass_ctx
def stat_cmd(ctx: Ctx, objects) -> None:
    """Show an object's metadata."""
    for name in objects:
        bucket, key = ctx.ref(name)
        if not key:
            ctx.client.head_bucket(bucket)
            click.echo(f"bucket:        {bucket}")
            continue
        h = ctx.client.head_object(bucket, key)
        click.echo(f"object:        {bucket}/{key}")
        click.echo(f"size:          {human_size(h.content_length)} ({h.content_length} bytes)")
        if h.compressed:
            click.echo(f"stored:        {human_size(h.stored_length)} (zstd)")
        click.echo(f"modified:      {h.last_modified.isoformat()}")
        for label, value in (
            ("etag", h.etag),
            ("content-type", h.content_type),
            ("encoding", h.content_encoding),
            ("version", h.version_id),
        ):
            if value:
                click.echo(f"{label + ':':15}{value}")
        for k, v in sorted(h.user_metadata.items()):
            click.echo(f"meta {k + ':':10}{v}")
