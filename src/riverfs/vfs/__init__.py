"""Filesystem semantics without FUSE: handles, readers, writers, close-to-open."""
