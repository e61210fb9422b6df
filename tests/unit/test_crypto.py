"""Encrypted blocks and volume keys: what is detected, and that passphrases behave."""

from __future__ import annotations

import os

import pytest

from riverfs.chunk import crypto
from riverfs.chunk.block import BlockCorrupt, decode_block, encode_block

KEY = "chunks/0/0/7_0_100000"


@pytest.fixture(scope="module")
def keys() -> crypto.VolumeKeys:
    return crypto.new_encryption("passphrase")[1]


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_encrypted_blocks_round_trip_and_never_show_their_plaintext(keys, compression):
    data = b"plaintext marker " * 6000
    raw = encode_block(data, compression, keys.blocks, KEY)
    assert b"plaintext marker" not in raw
    assert bytes(decode_block(raw, KEY, keys.blocks)) == data
    assert encode_block(data, compression, keys.blocks, KEY) != raw  # a fresh nonce each time


def test_a_block_moved_to_another_key_fails_authentication(keys):
    raw = encode_block(os.urandom(5000), "none", keys.blocks, KEY)
    with pytest.raises(BlockCorrupt, match="authentication failed"):
        decode_block(raw, "chunks/0/0/8_0_5000", keys.blocks)


def test_every_single_byte_change_or_truncation_is_detected(keys):
    raw = encode_block(b"x" * 3000, "zstd", keys.blocks, KEY)
    for i in range(0, len(raw), 7):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(BlockCorrupt):
            decode_block(bytes(bad), KEY, keys.blocks)
    for cut in (1, 16, len(raw) // 2):
        with pytest.raises(BlockCorrupt):
            decode_block(raw[:-cut], KEY, keys.blocks)


def test_plain_blocks_are_refused_on_an_encrypted_volume_and_the_other_way_round(keys):
    plain = encode_block(b"planted", "none", key=KEY)
    with pytest.raises(BlockCorrupt, match="not encrypted"):
        decode_block(plain, KEY, keys.blocks)
    with pytest.raises(BlockCorrupt, match="is encrypted"):
        decode_block(encode_block(b"secret", "none", keys.blocks, KEY), KEY)


def test_another_volumes_key_cannot_read_a_block(keys):
    other = crypto.new_encryption("passphrase")[1]  # same passphrase, another master key
    raw = encode_block(b"data", "none", keys.blocks, KEY)
    with pytest.raises(BlockCorrupt, match="authentication failed"):
        decode_block(raw, KEY, other.blocks)


def test_the_right_passphrase_unlocks_a_wrong_one_is_refused_and_a_change_keeps_the_key():
    entry, keys = crypto.new_encryption("old secret")
    assert "old secret" not in str(entry)
    same = crypto.unlock(entry, "old secret")
    assert same.cache_name(KEY) == keys.cache_name(KEY)
    with pytest.raises(crypto.WrongPassphrase):
        crypto.unlock(entry, "old secreT")
    changed = crypto.rewrap(entry, "old secret", "new secret")
    with pytest.raises(crypto.WrongPassphrase):
        crypto.unlock(changed, "old secret")
    again = crypto.unlock(changed, "new secret")
    raw = encode_block(b"written before the change", "none", keys.blocks, KEY)
    assert bytes(decode_block(raw, KEY, again.blocks)) == b"written before the change"
    with pytest.raises(crypto.WrongPassphrase):
        crypto.rewrap(entry, "not it", "x")


def test_cache_names_are_keyed_hashes_that_reveal_nothing(keys):
    name = keys.cache_name(KEY)
    assert len(name) == 64 and all(c in "0123456789abcdef" for c in name)
    assert crypto.new_encryption("p")[1].cache_name(KEY) != name  # keyed per volume
