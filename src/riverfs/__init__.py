"""riverfs: a POSIX filesystem over object storage, mounted through FUSE."""

__version__ = "0.1.0"
