#!/usr/bin/env python3
"""Writes the hand-made seeds (seed-*) of fuzz/corpus/lock_ops/, log_ops/,
log_recovery/ and queue_ops/. Each target's encoding is documented at the top
of its harness, tests/support/<target>.rs. Run from anywhere:
    python3 fuzz/seeds.py
"""
import os
import struct

TRY, EXNW, SHNW, LOCKFOR, EXT, SHT, REL, DROP, ALL, SHRINK, STAMP, VALIDATE, STATS = range(13)
THREAD = 3
# Keys: 0 "sku:1", 1 "sku:2", 2 "cart:7", 3 "a".


def cfg(shards=3, idle=3, spin=3):
    """Indices into: shards 1, 2, 8, 64; idle entries 0, 1, 4, 32; spin limit 0, 1, 4, 10."""
    return [shards | idle << 2 | spin << 4]


def who(owner, key):
    return owner | key << 2


def acq(op, owner, key):
    return [op, who(owner, key)]


def lock_all(owner, *keys):
    bits = 0
    for i, key in enumerate(keys):
        bits |= key << (2 * i)
    return [ALL, owner | (len(keys) - 1) << 2, bits]


SEEDS = {
    "exclusive-basic": cfg() + acq(TRY, THREAD, 0) + [STATS] + acq(TRY, 0, 0) + [REL, 0, STATS]
    + acq(TRY, 0, 0) + acq(EXNW, THREAD, 0) + [DROP, 0, SHRINK, STATS],
    "exclusive-nesting": cfg() + acq(TRY, THREAD, 0) + acq(EXNW, THREAD, 0) + acq(SHNW, THREAD, 0)
    + acq(LOCKFOR, THREAD, 0) + acq(EXT, THREAD, 0) + acq(SHT, THREAD, 0) + acq(TRY, 1, 0) + [REL, 0]
    + acq(TRY, 1, 0) + [DROP, 0, REL, 0, STATS, DROP, 0, DROP, 0] + acq(SHNW, 1, 0) + [REL, 1, STATS],
    "session-nesting": cfg() + acq(TRY, 0, 1) + acq(SHNW, 0, 1) + acq(LOCKFOR, 0, 1) + acq(SHNW, 1, 1)
    + acq(SHT, 2, 1) + [DROP, 1, DROP, 0, STATS] + acq(TRY, THREAD, 1) + [DROP, 0] + acq(TRY, THREAD, 1),
    "shared-readers": cfg() + acq(SHNW, 0, 2) + acq(SHNW, 1, 2) + acq(SHNW, 2, 2) + acq(SHNW, THREAD, 2)
    + acq(SHT, 0, 2) + [STATS] + acq(TRY, 0, 2) + acq(EXNW, 1, 2) + acq(LOCKFOR, THREAD, 2) + acq(EXT, 2, 2)
    + [REL, 0, REL, 0, STATS, DROP, 1, DROP, 0, DROP, 0, STATS] + acq(TRY, 1, 2),
    "shared-unnamed-upgrade": cfg() + acq(SHNW, 0, 3) + acq(SHNW, 1, 3) + acq(SHNW, 2, 3) + acq(SHNW, 1, 3)
    + acq(SHNW, THREAD, 3) + acq(TRY, THREAD, 3) + acq(LOCKFOR, THREAD, 3) + acq(EXT, THREAD, 3) + [REL, 0]
    + acq(TRY, THREAD, 3) + acq(EXNW, 2, 3) + [STATS],
    "shared-same-owner-twice": cfg() + acq(SHNW, 0, 0) + acq(SHNW, 0, 0) + acq(TRY, 0, 0) + [REL, 0]
    + acq(TRY, 0, 0) + [REL, 0] + acq(TRY, 0, 0) + [STATS],
    "timeouts": cfg() + acq(TRY, 0, 2) + acq(LOCKFOR, THREAD, 2) + acq(EXT, 1, 2) + acq(SHT, 2, 2)
    + acq(SHT, THREAD, 2) + [STATS] + [REL, 0] + acq(SHT, 2, 2) + acq(EXT, THREAD, 2) + [STATS],
    "queued-then-abandon-shared": cfg() + acq(SHNW, 0, 1) + acq(EXT, 1, 1) + acq(SHNW, 2, 1) + acq(LOCKFOR, THREAD, 1)
    + [REL, 0, STATS, REL, 0] + acq(TRY, 1, 1) + [STATS],
    "lock-all": cfg() + lock_all(THREAD, 0, 1, 2) + [STATS] + acq(TRY, 0, 1) + lock_all(0, 3) + [REL, 0, STATS]
    + lock_all(THREAD, 3, 3, 0) + [DROP, 0, DROP, 0, STATS],
    "lock-all-rollback": cfg() + acq(TRY, 0, 1) + lock_all(THREAD, 0, 1, 2) + [STATS] + acq(TRY, THREAD, 0)
    + acq(TRY, THREAD, 2) + [SHRINK] + lock_all(1, 0, 1) + [STATS],
    "lock-all-nested": cfg() + acq(TRY, THREAD, 0) + lock_all(THREAD, 0, 3, 0) + [REL, 0] + acq(TRY, 1, 0)
    + [REL, 0] + acq(TRY, 1, 0) + acq(TRY, 1, 3) + [STATS],
    "lock-all-upgrade": cfg() + acq(SHNW, THREAD, 2) + lock_all(THREAD, 2, 3) + lock_all(THREAD, 3, 0)
    + acq(SHNW, 1, 1) + lock_all(1, 0, 1) + [STATS],
    "lock-all-sessions": cfg() + lock_all(0, 0, 1) + lock_all(1, 1, 2) + lock_all(2, 2, 3) + lock_all(0, 0, 1, 3)
    + [DROP, 0] + lock_all(1, 1, 2) + lock_all(2, 3, 2, 1) + [SHRINK],
    "stamp-validate": cfg() + [STAMP, 0, VALIDATE, 0] + acq(TRY, 0, 0) + [VALIDATE, 0, STAMP, 0, VALIDATE, 1]
    + [DROP, 0, VALIDATE, 1, STAMP, 0, VALIDATE, 2] + acq(SHNW, 1, 0) + [VALIDATE, 2, STAMP, 0]
    + [DROP, 0, VALIDATE, 3] + acq(SHNW, 2, 0) + acq(TRY, 2, 0) + [VALIDATE, 3],
    "stamp-absent-reclaimed": cfg(0, 0, 0) + [STAMP, 1, STAMP, 2] + acq(TRY, 0, 1) + [DROP, 0, SHRINK, VALIDATE, 0]
    + acq(SHNW, 1, 2) + [VALIDATE, 1, DROP, 0, SHRINK, STAMP, 1, VALIDATE, 2] + acq(TRY, 2, 3) + [VALIDATE, 2],
    "stamp-nested": cfg() + acq(TRY, THREAD, 3) + [DROP, 0, STAMP, 3] + acq(TRY, THREAD, 3) + acq(TRY, THREAD, 3)
    + [STAMP, 3, VALIDATE, 0, VALIDATE, 1] + lock_all(THREAD, 3) + [STAMP, 2] + lock_all(0, 2, 1)
    + [VALIDATE, 2],
    "stamp-ring": cfg() + sum(([STAMP, k % 4 | (k % 8) << 2] for k in range(12)), [])
    + acq(TRY, 0, 0) + sum(([VALIDATE, k] for k in range(8)), []),
    "reclaim-one-shard": cfg(0, 0, 0) + sum((acq(TRY, o, k) + [DROP, 0] for o in range(4) for k in range(4)), [])
    + [STATS] + acq(SHNW, 0, 0) + acq(SHNW, 1, 1) + acq(TRY, 2, 2) + [SHRINK, DROP, 1, SHRINK, STATS],
    "reclaim-two-shards": cfg(1, 1, 1) + sum((acq(SHNW, o, k) + acq(TRY, o, (k + 1) % 4) + [REL, 0, SHRINK]
                                           for o in range(4) for k in range(4)), []) + [STATS],
    "tokens-across-shrink": cfg(0, 1, 0) + sum((acq(TRY, THREAD, 0) + [REL, 0, SHRINK] + acq(SHNW, 0, 0)
                                             + [DROP, 0, SHRINK] for _ in range(6)), []),
    "many-guards": cfg() + sum((acq(SHNW, i % 4, i % 4) for i in range(70)), []) + [STATS]
    + sum(([REL, i * 7] for i in range(20)), []) + [STATS, SHRINK],
    "many-nested": cfg(2, 0, 0) + sum((acq(TRY, 1, 1) for _ in range(66)), []) + [STATS]
    + sum(([DROP, i] for i in range(30)), []) + acq(TRY, 2, 1),
    "max-ops": cfg() + [STATS] * 300,
    "spin-lock-for": cfg(2, 2, 1) + acq(TRY, 0, 0) + acq(LOCKFOR, THREAD, 0) + acq(LOCKFOR, 1, 0) + [STATS],
    "truncated-op": cfg() + acq(TRY, THREAD, 0) + [ALL, 3],
    "config-only": [0x3f],
    "everything": cfg(1, 1, 2) + acq(TRY, 0, 0) + acq(EXNW, 1, 1) + acq(SHNW, 2, 2) + acq(LOCKFOR, THREAD, 3)
    + acq(EXT, 0, 1) + acq(SHT, 1, 0) + lock_all(2, 2, 3) + [STAMP, 2, VALIDATE, 0, STATS, REL, 1, DROP, 0, SHRINK]
    + lock_all(THREAD, 0, 1, 2) + [VALIDATE, 0, STATS],
}



# ---------------------------------------------------------------------------
# log_ops (tests/support/log_ops.rs)

BUFFERED, SYNC, INTERVAL = 0, 1, 2
SEG4K, SEG5K, SEG6K, SEG8K = range(4)
NO_RETENTION, RET4K, RET8K, RET12K, RET20K = 0, 4, 5, 6, 7


def topic(durability=BUFFERED, segment=SEG4K, retention=NO_RETENTION):
    return durability | segment << 2 | retention << 4


def pub(t, size, key=False, headers=0):
    return [0, t | key << 1 | headers << 2, size]


def batch(t, count, size, extras=False):
    return [1, t | ((count - 1) % 20) << 1 | extras << 6, size]


def sync(t):
    return [2, t]


def consume(t, g, n):
    return [3, t | g << 1 | n << 2]


def commit(t, g, back=None):
    return [4, t | g << 1 | (0 if back is None else 4 | back << 3)]


def unsub(t, g):
    return [5, t | g << 1]


def read(t, from_end, distance):
    return [6, t, from_end | distance << 1]


def fail(k):
    return [7, k]


def crash(seed, repair=False, recovery_fails=None):
    return [8, repair | (0 if recovery_fails is None else 2 | recovery_fails << 2), seed]


def restart(seed, repair=False, cut=False):
    return [9, repair | cut << 1, seed]


def capacity(c):
    return [10, c]


def check(t):
    return [11, t]


def many(n, f):
    return sum((f(i) for i in range(n)), [])


LOG_OPS = {
    "buffered-basic": [topic(), topic()] + pub(0, 10) + pub(1, 200, key=True) + pub(0, 0) + check(0) + check(1)
    + read(0, 0, 0) + read(1, 1, 1) + crash(1),
    "sync-topics": [topic(SYNC), topic(SYNC, SEG8K)] + many(12, lambda i: pub(i % 2, 40 + i * 17)) + batch(0, 5, 60)
    + crash(2) + many(6, lambda i: pub(i % 2, 90)) + crash(3),
    "roll-many-segments": [topic(BUFFERED, SEG4K), topic(BUFFERED, SEG5K)] + many(40, lambda i: pub(0, 200))
    + sync(0) + many(30, lambda i: pub(0, 150 + i)) + check(0) + crash(4) + many(20, lambda i: pub(0, 220)) + crash(5),
    "batches": [topic(), topic(SYNC)] + batch(0, 1, 10) + batch(0, 20, 20) + batch(1, 20, 240) + batch(1, 7, 255)
    + batch(0, 13, 100, extras=True) + sync(0) + batch(0, 9, 180, extras=True) + crash(6),
    "keys-headers": [topic(), topic(SYNC)] + pub(0, 5, key=True, headers=3) + pub(1, 255, key=True)
    + pub(1, 0, headers=2) + batch(0, 4, 30, extras=True) + read(0, 1, 2) + crash(7),
    "consume-commit": [topic(), topic(SYNC)] + many(20, lambda i: pub(i % 2, 70)) + consume(0, 0, 6) + commit(0, 0)
    + consume(1, 1, 20) + commit(1, 1, back=3) + consume(0, 0, 30) + commit(0, 0) + unsub(0, 0) + crash(8)
    + consume(0, 0, 10) + commit(0, 0) + consume(1, 1, 63) + commit(1, 1),
    "commit-past-lost-tail": [topic(), topic()] + many(10, lambda i: pub(0, 50)) + sync(0) + many(10, lambda i: pub(0, 50))
    + consume(0, 1, 20) + commit(0, 1) + crash(9) + consume(0, 1, 5) + commit(0, 1) + crash(10),
    "crash-during-batch-sync": [topic(SYNC), topic()] + pub(0, 20) + fail(0) + batch(0, 5, 40) + pub(0, 10) + crash(11),
    "interval": [topic(INTERVAL), topic(INTERVAL, SEG6K)] + many(25, lambda i: pub(i % 2, 130)) + sync(1)
    + check(0) + crash(12) + many(5, lambda i: pub(0, 10)) + restart(13),
    "repair-reopen": [topic(), topic(SYNC)] + many(30, lambda i: pub(i % 2, 160)) + crash(14, repair=True)
    + many(30, lambda i: pub(i % 2, 160)) + sync(0) + crash(15, repair=True),
    "crash-during-recovery": [topic(), topic(SYNC)] + many(30, lambda i: pub(i % 2, 200)) + sync(0)
    + many(10, lambda i: pub(0, 200)) + crash(16, recovery_fails=0) + many(5, lambda i: pub(i % 2, 20))
    + crash(17, recovery_fails=1) + pub(0, 1) + crash(18, recovery_fails=3, repair=True),
    "clean-restarts": [topic(), topic(SYNC)] + many(20, lambda i: pub(i % 2, 100)) + restart(19)
    + many(20, lambda i: pub(i % 2, 100)) + restart(20, cut=True) + pub(0, 3) + restart(21, repair=True)
    + pub(1, 3) + restart(22, repair=True, cut=True),
    "retention": [topic(BUFFERED, SEG4K, RET4K), topic(SYNC, SEG4K, RET8K)] + many(60, lambda i: pub(i % 2, 250))
    + sync(0) + consume(0, 0, 50) + commit(0, 0) + check(0) + check(1) + crash(23) + many(40, lambda i: pub(i % 2, 250))
    + sync(0) + sync(1) + restart(24) + consume(1, 1, 63) + check(0) + read(0, 0, 0) + crash(25),
    "disk-full": [topic(), topic(SYNC)] + capacity(1) + many(20, lambda i: pub(i % 2, 255)) + batch(0, 10, 100)
    + consume(1, 0, 5) + commit(1, 0) + capacity(0) + many(5, lambda i: pub(i % 2, 255)) + sync(0) + crash(26),
    "disk-full-then-restart": [topic(), topic()] + capacity(4) + many(30, lambda i: pub(0, 240)) + restart(27)
    + many(10, lambda i: pub(0, 240)) + crash(28),
    "read-ops": [topic(), topic(SYNC)] + many(10, lambda i: pub(i % 2, 30)) + read(0, 0, 0) + read(0, 0, 3)
    + read(0, 1, 0) + read(0, 1, 1) + read(1, 1, 127) + read(1, 0, 127) + crash(29) + read(0, 1, 1),
    "many-crashes": [topic(), topic(SYNC, SEG5K)] + many(7, lambda c: many(6, lambda i: pub(i % 2, 40 * i))
                                                          + sync(c % 2) + fail(c) + pub(0, 60) + batch(1, 3, 80)
                                                          + crash(30 + c, repair=c % 3 == 0)),
    "max-ops": [topic(), topic()] + check(0) * 200,
    "config-only": [topic(SYNC, SEG8K, RET20K), topic(INTERVAL, SEG6K, RET12K)],
}
for k in range(0, 12):
    LOG_OPS[f"fail-after-{k}"] = ([topic(SYNC), topic(BUFFERED, SEG4K, RET8K)] + pub(0, 30) + many(12, lambda i: pub(1, 240))
                                  + fail(k) + many(6, lambda i: pub(i % 2, 120)) + batch(0, 3, 50) + sync(1)
                                  + consume(0, 0, 8) + commit(0, 0) + consume(1, 1, 5) + commit(1, 1) + pub(0, 7)
                                  + crash(40 + k, repair=k % 4 == 3))

# ---------------------------------------------------------------------------
# log_recovery (tests/support/log_recovery.rs)

CLEAN, CRASHED, TWO_TOPICS, SMALL = range(4)
META, CONF, CKPT, SEG, SEG_END, IDX, GROUP, ANY = range(8)
OVER, FLIP, TRUNC, DEL, REPL, SETINT, FIXCRC, ADD, COPY, FRAME, SLOT, VER = range(12)


def f(role, topic=0, k=0):
    return [role, topic | k << 1]


def u16(v):
    return list(struct.pack("<H", v))


def over(file, pos, data):
    assert 1 <= len(data) <= 16
    return [OVER] + file + u16(pos) + [len(data) - 1] + list(data)


def flip(file, pos, bit=0):
    return [FLIP] + file + u16(pos) + [bit]


def trunc(file, length):
    return [TRUNC] + file + u16(length)


def delete(file):
    return [DEL] + file


def replace(file, data):
    return [REPL] + file + [len(data)] + list(data)


def setint(file, pos, width, value):
    """width: 1, 2, 4, 8; value: 0, 1, 2, 'max', 32, 4096, 'len' or an int."""
    named = {0: 0, 1: 1, 2: 2, "max": 3, 32: 4, 4096: 5, "len": 6}
    spec = [1, 2, 4, 8].index(width)
    if value in named and not isinstance(value, bool):
        return [SETINT] + file + u16(pos) + [spec | named[value] << 2]
    return [SETINT] + file + u16(pos) + [spec | 7 << 2] + list(struct.pack("<Q", value))


def fixcrc(file, pos):
    return [FIXCRC] + file + u16(pos)


def add(kind, arg, data=b""):
    return [ADD, kind, arg, len(data)] + list(data)


def copy(src, dst):
    return [COPY] + src + dst


def frame(file, sizes, offset_kind=0):
    assert 1 <= len(sizes) <= 4
    return [FRAME] + file + [(len(sizes) - 1) | offset_kind << 2] + list(sizes)


def slot(file, which, generation, a, b, c):
    """generation: 0 newest+1, 1 newest, 2 one, 3 zero; a, b, c: selectors (see set_slot)."""
    return [SLOT] + file + [which | generation << 1, a, b, c]


def ver(file, version):
    return [VER] + file + [version]


GARBAGE = bytes(range(0xA0, 0xB0))
LOG_RECOVERY = {
    "clean": [CLEAN],
    "crashed": [CRASHED],
    "two-topics": [TWO_TOPICS],
    "small": [SMALL],
    # Torn tails: the last segment cut short, or garbage after its frames.
    "torn-tail-truncated": [CRASHED] + trunc(f(SEG_END), 3000),
    "torn-tail-mid-header": [CRASHED] + trunc(f(SEG_END), 3480),
    "torn-tail-garbage": [CRASHED] + over(f(SEG_END), 3500, GARBAGE),
    "torn-tail-garbage-clean": [CLEAN] + over(f(SEG_END), 3500, GARBAGE),
    "torn-tail-small": [SMALL] + trunc(f(SEG_END), 200),
    "torn-tail-every-segment": [CRASHED] + trunc(f(SEG, 0, 2), 2000) + trunc(f(SEG, 0, 3), 1000) + trunc(f(SEG_END), 40),
    "torn-frame-length": [CRASHED] + setint(f(SEG_END), 32, 4, 4096),
    "zero-frame-length-mid": [CRASHED] + setint(f(SEG, 0, 3), 32, 4, 0),
    # Bad CRCs, in trusted (below the recovery point) and scanned segments.
    "bad-crc-trusted": [CRASHED] + flip(f(SEG, 0, 0), 100, 3),
    "bad-crc-scanned": [CRASHED] + flip(f(SEG, 0, 3), 200, 5),
    "bad-crc-clean": [CLEAN] + flip(f(SEG, 0, 1), 1000, 1),
    "bad-crc-active-clean": [CLEAN] + flip(f(SEG_END), 40, 0),
    "bad-crc-two-topics": [TWO_TOPICS] + flip(f(SEG, 0, 0), 4000) + flip(f(SEG, 1, 1), 50),
    "bad-crc-first-frame-small": [SMALL] + flip(f(SEG, 0, 0), 33),
    # Bad headers.
    "bad-header-first": [CRASHED] + flip(f(SEG, 0, 0), 3),
    "bad-header-scanned": [CRASHED] + flip(f(SEG, 0, 2), 20),
    "bad-header-last": [CLEAN] + flip(f(SEG_END), 0),
    "bad-header-base": [CRASHED] + setint(f(SEG, 0, 3), 16, 8, 7) + fixcrc(f(SEG, 0, 3), 0),
    "bad-header-size": [CRASHED] + setint(f(SEG, 0, 2), 12, 4, 4096) + fixcrc(f(SEG, 0, 2), 4),
    "bad-meta": [CLEAN] + flip(f(META), 2),
    "bad-conf": [CLEAN] + flip(f(CONF), 30),
    "bad-conf-segment-bytes": [CLEAN] + setint(f(CONF), 24, 8, 1) + fixcrc(f(CONF), 0),
    "bad-checkpoint-magic": [CRASHED] + flip(f(CKPT), 1),
    "bad-checkpoint-slot": [CRASHED] + flip(f(CKPT), 20),
    "bad-checkpoint-both-slots": [CLEAN] + flip(f(CKPT), 20) + flip(f(CKPT), 60),
    "bad-group-file": [CLEAN] + flip(f(GROUP), 3),
    "bad-group-slot": [CLEAN] + flip(f(GROUP, 0, 0), 60),
    "bad-index": [CLEAN] + flip(f(IDX, 0, 1), 30),
    "bad-index-active": [CLEAN] + flip(f(IDX, 0, 4), 36),
    # Newer (and zero) versions.
    "newer-meta": [CLEAN] + ver(f(META), 2),
    "newer-conf": [CLEAN] + ver(f(CONF), 2),
    "newer-segment-trusted": [CRASHED] + ver(f(SEG, 0, 0), 2),
    "newer-segment-scanned": [CRASHED] + ver(f(SEG_END), 2),
    "zero-version-segment": [CRASHED] + ver(f(SEG, 0, 3), 0),
    "newer-index": [CLEAN] + ver(f(IDX, 0, 2), 2),
    "newer-checkpoint": [CLEAN] + ver(f(CKPT), 2),
    "newer-group": [CLEAN] + ver(f(GROUP, 0, 1), 9),
    "newer-segment-two-topics": [TWO_TOPICS] + ver(f(SEG, 1, 1), 200),
    # Truncated files.
    "truncated-meta": [CLEAN] + trunc(f(META), 8),
    "truncated-conf": [CLEAN] + trunc(f(CONF), 30),
    "truncated-checkpoint": [CRASHED] + trunc(f(CKPT), 40),
    "truncated-checkpoint-empty": [CRASHED] + trunc(f(CKPT), 0),
    "truncated-group": [CLEAN] + trunc(f(GROUP), 50),
    "truncated-index": [CLEAN] + trunc(f(IDX, 0, 0), 20),
    "truncated-segment-header": [CRASHED] + trunc(f(SEG, 0, 2), 10),
    "truncated-segment-empty": [CLEAN] + trunc(f(SEG, 0, 1), 0),
    "truncated-first-segment": [CRASHED] + trunc(f(SEG, 0, 0), 0),
    "truncated-trusted-mid": [CRASHED] + trunc(f(SEG, 0, 1), 1500),
    "zeroed-checkpoint-header": [CLEAN] + over(f(CKPT), 0, bytes(16)),
    # Missing files.
    "missing-meta": [CLEAN] + delete(f(META)),
    "missing-conf": [CLEAN] + delete(f(CONF)),
    "missing-checkpoint": [CRASHED] + delete(f(CKPT)),
    "missing-checkpoint-clean": [CLEAN] + delete(f(CKPT)),
    "missing-first-segment": [CLEAN] + delete(f(SEG, 0, 0)) + delete(f(IDX, 0, 0)),
    "missing-middle-segment": [CRASHED] + delete(f(SEG, 0, 1)),
    "missing-scanned-segment": [CRASHED] + delete(f(SEG, 0, 3)),
    "missing-last-segment": [CLEAN] + delete(f(SEG_END)),
    "missing-all-segments": [CRASHED] + sum((delete(f(SEG)) for _ in range(5)), []),
    "missing-index": [CLEAN] + delete(f(IDX, 0, 4)),
    "missing-group": [CLEAN] + delete(f(GROUP)),
    "missing-everything-of-topic": [SMALL] + sum((delete(f(ANY, 0, 4)) for _ in range(3)), []),
    # Forged: checkpoints, indexes, frames, extra segments, copies.
    "forged-clean-checkpoint": [CRASHED] + slot(f(CKPT), 1, 0, 4, 0, 1),
    "forged-clean-checkpoint-wrong-next": [CRASHED] + slot(f(CKPT), 1, 0, 4, 5, 1),
    "forged-recovery-point-ahead": [CRASHED] + slot(f(CKPT), 1, 0, 6, 0, 0),
    "forged-recovery-point-zero": [CLEAN] + slot(f(CKPT), 0, 0, 7, 0, 0),
    "forged-index-short": [CLEAN] + add(1, 1 << 1),
    "forged-index-full-file": [CRASHED] + add(1, 2 << 1 | 0),
    "forged-index-header-only": [CLEAN] + add(1, 3 << 1),
    "appended-frame": [CRASHED] + frame(f(SEG_END), [10, 20, 30]),
    "appended-frame-clean": [CLEAN] + frame(f(SEG_END), [5]),
    "appended-frame-bad-offset": [CRASHED] + frame(f(SEG_END), [7], 3),
    "appended-frame-trusted-overlap": [CRASHED] + frame(f(SEG, 0, 0), [9, 9], 0),
    "appended-frame-huge-offset": [SMALL] + frame(f(SEG, 1, 0), [1], 6),
    "extra-segment-continuing": [CRASHED] + add(0, 0),
    "extra-segment-inside": [CLEAN] + add(0, 1 << 1),
    "extra-segment-gap": [CRASHED] + add(0, 3 << 1, bytes(40)),
    "extra-segment-max-base": [SMALL] + add(0, 4 << 1),
    "extra-segment-then-frame": [CRASHED] + add(0, 0) + frame(f(SEG_END), [100, 3]),
    "copy-segment-over-next": [CRASHED] + copy(f(SEG, 0, 3), f(SEG, 0, 4)),
    "copy-checkpoint-across-topics": [TWO_TOPICS] + copy(f(CKPT, 0), f(CKPT, 1)),
    "copy-group-over-checkpoint": [CLEAN] + copy(f(GROUP), f(CKPT)),
    "fixed-crc-after-flip": [CRASHED] + flip(f(SEG, 0, 3), 300) + fixcrc(f(SEG, 0, 3), 300),
    # Files recovery must clean up or ignore.
    "group-past-end": [CRASHED] + add(2, 3 << 1) + add(2, 2 << 1),
    "group-junk": [CLEAN] + add(7, 0, b"junk"),
    "temporary-files": [CRASHED] + add(3, 0, b"half a conf") + add(3, 1 << 1, b"half a meta"),
    "stray-files": [CLEAN] + add(4, 0, b"?") + add(4, 1 << 1, b"??") + add(4, 2 << 1, b"notes"),
    "trash-directory": [CLEAN] + add(5, 0, GARBAGE),
    "trash-stray-file": [CLEAN] + add(5, 1 << 1, b"x"),
    "new-topic-from-conf": [CLEAN] + add(6, 0),
    "new-topic-without-conf": [TWO_TOPICS] + add(6, 1 << 1),
    "replaced-segment": [CRASHED] + replace(f(SEG, 0, 2), GARBAGE * 4),
    "replaced-meta": [CLEAN] + replace(f(META), b"TOLLGATE"),
    # Several at once.
    "combined-damage": [CRASHED] + flip(f(SEG, 0, 4), 500) + delete(f(IDX, 0, 0)) + trunc(f(GROUP, 0, 1), 79)
    + over(f(CKPT), 48, bytes(8)),
    "combined-two-topics": [TWO_TOPICS] + trunc(f(SEG_END, 0), 4000) + delete(f(CKPT, 1)) + flip(f(IDX, 1, 1), 9)
    + add(2, 1 | 3 << 1),
}


# ---------------------------------------------------------------------------
# queue_ops (tests/support/queue_ops.rs)

Q_PUB, Q_BATCH, Q_RECV, Q_ACK, Q_NACK, Q_REJECT, Q_DROP, Q_EXTEND, Q_WAIT, Q_METRICS, Q_KILL, Q_CUT, Q_REJOIN = range(13)
# Visibility timeouts 5, 8, 12, 20 ms; attempts 1, 2, 3, 5; windows 1, 2, 4, 65536; filters none, a.*, a.#, *.x.
V5, V8, V12, V20 = range(4)
A1, A2, A3, A5 = range(4)
W1, W2, W4, WBIG = range(4)
F_NONE, F_A_ONE, F_A_ANY, F_X = range(4)
# Keys: none, a.x, a.y.z, b.x. Publish delays: 0, 2, 6 ms (indices 0, 2, 3).
K_NONE, K_AX, K_AYZ, K_BX = range(4)
D0, D2, D6 = 0, 2, 3
# Nack delays: 0, 1, 3, 6, 2 ms, too long.
N0, N1, N3, N6, N2, NLONG = 0, 2, 3, 4, 5, 6
# Extensions: 0, 1 ms, visibility, 2 x visibility, 3 ms, too long, 10 ms, visibility / 2.
E0, E1, EVIS, E2VIS, E3, ELONG, E10, EHALF = range(8)
# Waits: past the longest visibility timeout, 1, 2, 4 ms.
WAIT_VIS, WAIT1, WAIT2, WAIT4 = range(4)


def q_group(vis=V5, attempts=A3, window=WBIG, filt=F_NONE):
    return vis | attempts << 2 | window << 4 | filt << 6


def q_setup(g0=None, g1=None, buffered=False, dead=False, seg8k=False):
    g0 = q_group() if g0 is None else g0
    g1 = q_group() if g1 is None else g1
    return [g0, g1, (3 if buffered else 0) | dead << 2 | seg8k << 3]


def q_pub(prio=None, delay=D0, key=K_NONE):
    """prio: None, 1..9, 'invalid' (10), or ('explicit', 0..4)."""
    if prio is None:
        p = 0
    elif prio == "invalid":
        p = 10
    elif isinstance(prio, tuple):
        p = 11 + prio[1]
    else:
        assert 1 <= prio <= 9
        p = prio
    return [Q_PUB, p | delay << 4 | key << 6]


def q_batch(count=3, prio=0, key=K_NONE):
    return [Q_BATCH, (count - 2) | prio << 2 | key << 6]


def q_recv(g=0, w=0, timeout=0, stale=None):
    """timeout: 0, 1 (1 ms), 2 (3 ms); stale: receive on the kept worker `stale` of an old engine."""
    t = [0, 2, 3][timeout]
    arg = g | w << 1 | t << 2
    if stale is not None:
        arg |= 16 | stale << 5
    return [Q_RECV, arg]


def q_ack(i=0):
    return [Q_ACK, i]


def q_nack(i=0, delay=N0):
    return [Q_NACK, i | delay << 5]


def q_reject(i=0):
    return [Q_REJECT, i]


def q_drop(i=0):
    return [Q_DROP, i]


def q_extend(i=0, by=EVIS):
    return [Q_EXTEND, i | by << 5]


def q_wait(which=WAIT_VIS):
    return [Q_WAIT, which]


def q_metrics(g=0):
    return [Q_METRICS, g]


def q_kill(keep=False, clean=False):
    return [Q_KILL, keep | clean << 1]


def q_cut(seed, keep=False, clean=False):
    return [Q_CUT, keep | clean << 1, seed]


def q_rejoin(g=0):
    return [Q_REJOIN, g]


def q_all(*parts):
    return sum(parts, [])


def q_random(rng, n):
    """`n` ops, weighted towards publishing and receiving, with few waits."""
    ops = []
    waits = 0
    for _ in range(n):
        r = rng.random()
        if r < 0.22:
            ops += [Q_PUB, rng.randrange(256)]
        elif r < 0.27:
            ops += [Q_BATCH, rng.randrange(256)]
        elif r < 0.50:
            ops += [Q_RECV, rng.randrange(256) & 0x1f]
        elif r < 0.60:
            ops += [Q_ACK, rng.randrange(8)]
        elif r < 0.66:
            ops += [Q_NACK, rng.randrange(256)]
        elif r < 0.70:
            ops += [Q_REJECT, rng.randrange(8)]
        elif r < 0.74:
            ops += [Q_DROP, rng.randrange(8)]
        elif r < 0.78:
            ops += [Q_EXTEND, rng.randrange(256)]
        elif r < 0.82 and waits < 3:
            waits += 1
            ops += [Q_WAIT, rng.randrange(4)]
        elif r < 0.87:
            ops += [Q_METRICS, rng.randrange(2)]
        elif r < 0.91:
            ops += [Q_KILL, rng.randrange(4)]
        elif r < 0.96:
            ops += [Q_CUT, rng.randrange(4), rng.randrange(256)]
        else:
            ops += [Q_REJOIN, rng.randrange(2)]
    return ops


QUEUE_OPS = {
    # Each op alone (after a publish or two), to start from.
    "empty": [],
    "setup-only": q_setup(),
    "publish-receive-ack": q_setup() + q_pub() + q_recv() + q_ack() + q_metrics(),
    "publish-twice-receive-both-groups": q_setup() + q_pub() + q_pub(key=K_AX) + q_recv(0) + q_recv(1)
    + q_recv(0, 1) + q_recv(1, 1) + q_metrics(0) + q_metrics(1) + q_ack(0) + q_ack(0) + q_ack(1) + q_ack(0),
    "batch": q_setup() + q_batch(5, 7, K_AX) + q_recv() + q_recv() + q_metrics() + q_ack(1) + q_ack(0),
    "metrics-empty": q_setup() + q_metrics(0) + q_metrics(1),
    # Priorities.
    "priority-order": q_setup() + q_pub(1) + q_pub(5) + q_pub(9) + q_pub(3) + q_pub() + q_pub(("explicit", 0))
    + q_all(*[q_recv() + q_ack() for _ in range(6)]) + q_metrics(),
    "priority-equal-then-offset": q_setup() + q_pub(4) + q_pub(4) + q_pub(4) + q_recv() + q_recv() + q_recv()
    + q_metrics() + q_ack(2) + q_ack(1) + q_ack(0),
    "priority-batch": q_setup() + q_batch(5, 1) + q_batch(4, 2) + q_all(*[q_recv(0) for _ in range(9)])
    + q_metrics(0) + q_all(*[q_ack(0) for _ in range(9)]),
    "priority-window-2": q_setup(q_group(window=W2)) + q_pub(1) + q_pub(2) + q_pub(9) + q_pub(8)
    + q_recv() + q_ack() + q_recv() + q_recv() + q_metrics() + q_ack() + q_ack(),
    "priority-window-1": q_setup(q_group(window=W1)) + q_pub(1) + q_pub(9) + q_recv() + q_recv()
    + q_metrics() + q_ack() + q_recv() + q_ack(),
    "priority-window-4-batch": q_setup(q_group(window=W4)) + q_batch(5, 0) + q_batch(5, 9)
    + q_all(*[q_recv() for _ in range(5)]) + q_metrics() + q_all(*[q_ack(2) for _ in range(5)]),
    "priority-invalid": q_setup() + q_pub("invalid") + q_pub(9) + q_pub("invalid") + q_recv() + q_ack(),
    "priority-after-nack": q_setup() + q_pub(2) + q_pub(7) + q_recv() + q_nack() + q_recv() + q_ack() + q_recv()
    + q_ack(),
    "priority-redelivered-first": q_setup(q_group(vis=V5)) + q_pub(9) + q_pub(1) + q_recv() + q_wait()
    + q_recv() + q_ack() + q_ack(),
    # Delays.
    "delay-then-ready": q_setup() + q_pub(delay=D6) + q_recv() + q_metrics() + q_wait(WAIT4) + q_wait(WAIT4)
    + q_recv() + q_ack() + q_metrics(),
    "delay-priority": q_setup() + q_pub(9, D2) + q_pub(1) + q_recv() + q_wait(WAIT4) + q_recv() + q_ack(0)
    + q_ack(0),
    "delay-head-of-line-window-1": q_setup(q_group(window=W1)) + q_pub(delay=D6) + q_pub(9) + q_recv()
    + q_metrics() + q_wait(WAIT4) + q_wait(WAIT4) + q_recv() + q_ack() + q_recv() + q_ack(),
    "delay-drain": q_setup() + q_pub(delay=D6) + q_pub(delay=D2) + q_pub(delay=D6, key=K_BX),
    "delay-timed-receive": q_setup() + q_pub(delay=D2) + q_recv(timeout=2) + q_ack() + q_metrics(),
    "delay-across-kill": q_setup() + q_pub(delay=D6) + q_kill() + q_recv() + q_wait(WAIT4) + q_wait(WAIT4)
    + q_recv() + q_ack(),
    # Filters.
    "filter-a-one": q_setup(q_group(filt=F_A_ONE)) + q_pub(key=K_NONE) + q_pub(key=K_AX) + q_pub(key=K_AYZ)
    + q_pub(key=K_BX) + q_recv(0) + q_recv(0) + q_metrics(0) + q_ack() + q_recv(1) + q_metrics(1),
    "filter-a-any": q_setup(q_group(filt=F_A_ANY), q_group(filt=F_X)) + q_batch(5, 3, K_NONE)
    + q_all(*[q_recv(g) for g in (0, 1, 0, 1, 0, 1)]) + q_metrics(0) + q_metrics(1),
    "filter-window-1": q_setup(q_group(filt=F_X, window=W1)) + q_pub(key=K_AYZ) + q_pub(key=K_AYZ)
    + q_pub(key=K_BX) + q_recv() + q_metrics() + q_ack() + q_metrics(),
    "filter-across-kill": q_setup(q_group(filt=F_A_ONE)) + q_pub(key=K_BX) + q_pub(key=K_AX) + q_recv() + q_ack()
    + q_kill() + q_metrics() + q_pub(key=K_AX) + q_recv() + q_metrics(),
    # Nacks.
    "nack-immediate": q_setup() + q_pub() + q_recv() + q_nack(0, N0) + q_recv() + q_metrics() + q_ack(),
    "nack-delayed": q_setup() + q_pub() + q_recv() + q_nack(0, N3) + q_recv() + q_metrics() + q_wait(WAIT4)
    + q_recv() + q_ack() + q_metrics(),
    "nack-last-attempt": q_setup(q_group(attempts=A1)) + q_pub(5, key=K_AX) + q_recv() + q_nack(0, N1)
    + q_metrics(),
    "nack-until-dead": q_setup(q_group(attempts=A3)) + q_pub() + q_all(*[q_recv() + q_nack() for _ in range(3)])
    + q_recv() + q_metrics(),
    "nack-too-long": q_setup() + q_pub() + q_recv() + q_nack(0, NLONG) + q_recv() + q_metrics() + q_wait()
    + q_recv() + q_ack(),
    "nack-expired": q_setup() + q_pub() + q_recv() + q_wait() + q_nack(0, N6) + q_recv() + q_ack(),
    "nack-delayed-cut": q_setup() + q_pub() + q_recv() + q_nack(0, N6) + q_cut(3) + q_recv() + q_wait(WAIT4)
    + q_wait(WAIT4) + q_recv() + q_ack(),
    "nack-delayed-kill": q_setup() + q_pub() + q_recv() + q_nack(0, N6) + q_kill() + q_recv() + q_wait(WAIT4)
    + q_wait(WAIT4) + q_recv() + q_ack(),
    # Rejects and dead letters.
    "reject": q_setup() + q_pub(3, key=K_AYZ) + q_recv() + q_reject() + q_metrics() + q_recv(),
    "reject-expired": q_setup() + q_pub() + q_recv() + q_wait() + q_reject() + q_recv() + q_reject(),
    "reject-custom-dead-letter-topic": q_setup(dead=True) + q_pub(key=K_BX) + q_recv(1) + q_reject()
    + q_recv(0) + q_reject() + q_metrics(1),
    "dead-letter-on-receive": q_setup(q_group(attempts=A1, vis=V5)) + q_pub(7) + q_recv() + q_wait()
    + q_recv() + q_metrics(),
    "dead-letter-on-receive-window-1": q_setup(q_group(attempts=A1, window=W1)) + q_pub() + q_pub(9) + q_pub()
    + q_recv() + q_recv() + q_wait() + q_recv() + q_recv() + q_metrics() + q_ack(),
    "dead-letter-many-timeouts": q_setup(q_group(attempts=A2), q_group(attempts=A1)) + q_batch(4, 0)
    + q_all(*[q_recv(g) for g in (0, 0, 0, 0, 1, 1, 1, 1)]) + q_wait() + q_all(*[q_recv(g) for g in (0, 1, 0, 1)])
    + q_wait() + q_recv(0) + q_metrics(0) + q_metrics(1),
    "dead-letter-after-kill": q_setup(q_group(attempts=A1)) + q_pub() + q_recv() + q_kill() + q_recv()
    + q_metrics(),
    "dead-letter-after-cut": q_setup(q_group(attempts=A1)) + q_pub() + q_pub() + q_recv() + q_recv() + q_ack()
    + q_cut(9) + q_recv() + q_recv() + q_metrics(),
    # Drops.
    "drop-redelivers": q_setup() + q_pub() + q_recv() + q_drop() + q_metrics() + q_recv() + q_ack(),
    "drop-expired": q_setup() + q_pub() + q_recv() + q_wait() + q_drop() + q_recv() + q_ack(),
    "drop-redelivered-old": q_setup() + q_pub() + q_recv() + q_wait() + q_recv() + q_drop(0) + q_metrics()
    + q_ack(0),
    "drop-last-attempt": q_setup(q_group(attempts=A1)) + q_pub() + q_recv() + q_drop() + q_recv() + q_metrics(),
    # Extensions and expiry.
    "extend-then-ack": q_setup(q_group(vis=V5)) + q_pub() + q_recv() + q_extend(0, E2VIS) + q_wait(WAIT4)
    + q_wait(WAIT2) + q_metrics() + q_ack(),
    "extend-zero": q_setup() + q_pub() + q_recv() + q_extend(0, E0) + q_ack() + q_recv() + q_ack(),
    "extend-too-long": q_setup() + q_pub() + q_recv() + q_extend(0, ELONG) + q_ack(),
    "extend-expired": q_setup() + q_pub() + q_recv() + q_wait() + q_extend(0, E10) + q_recv() + q_extend(1, E1)
    + q_ack(0) + q_ack(0),
    "extend-shorter": q_setup(q_group(vis=V20)) + q_pub() + q_recv() + q_extend(0, E1) + q_wait(WAIT2)
    + q_metrics() + q_recv() + q_ack(1) + q_ack(0),
    "extend-half-then-nack-too-long": q_setup(q_group(vis=V8)) + q_pub() + q_recv() + q_extend(0, EHALF)
    + q_nack(0, NLONG) + q_metrics() + q_recv(),
    "expired-ack": q_setup() + q_pub() + q_recv() + q_wait() + q_ack() + q_metrics() + q_recv() + q_ack(),
    "expired-ack-after-redelivery": q_setup() + q_pub() + q_recv() + q_wait() + q_recv() + q_ack(0)
    + q_ack(0) + q_metrics(),
    "timeouts-counted": q_setup(q_group(vis=V5, attempts=A5)) + q_pub() + q_pub()
    + q_all(*[q_recv() + q_recv() + q_wait() for _ in range(2)]) + q_metrics(),
    # Kills.
    "kill-redelivers-next-attempt": q_setup() + q_pub() + q_recv() + q_kill() + q_recv() + q_metrics() + q_ack(),
    "kill-after-ack": q_setup() + q_pub() + q_pub() + q_recv() + q_ack() + q_kill() + q_recv() + q_ack()
    + q_recv(),
    "kill-keep-stale": q_setup() + q_pub() + q_pub() + q_recv() + q_recv(1) + q_kill(True) + q_ack(0)
    + q_nack(0, N1) + q_recv(stale=0) + q_recv(stale=1) + q_recv() + q_ack(),
    "kill-keep-stale-all-ops": q_setup() + q_batch(5) + q_all(*[q_recv() for _ in range(5)]) + q_kill(True)
    + q_extend(0, EVIS) + q_extend(0, ELONG) + q_nack(0, NLONG) + q_reject(0) + q_drop(0) + q_ack(0)
    + q_recv() + q_recv(timeout=2, stale=0) + q_ack(),
    "kill-twice": q_setup() + q_pub() + q_recv() + q_kill() + q_recv() + q_kill() + q_recv() + q_ack(),
    "kill-many": q_setup(q_group(attempts=A5)) + q_pub()
    + q_all(*[q_recv() + q_kill() for _ in range(6)]),
    "kill-buffered": q_setup(buffered=True) + q_pub() + q_recv() + q_ack() + q_pub() + q_recv() + q_kill()
    + q_recv() + q_ack(),
    # Power cuts.
    "cut-after-ack": q_setup() + q_pub() + q_recv() + q_ack() + q_cut(1) + q_recv() + q_metrics(),
    "cut-unsynced-attempt": q_setup() + q_pub() + q_recv() + q_cut(2) + q_recv() + q_ack(),
    "cut-synced-attempt": q_setup() + q_pub() + q_pub() + q_recv() + q_recv() + q_ack(1) + q_cut(5)
    + q_recv() + q_ack(),
    "cut-keep-stale": q_setup() + q_pub() + q_recv() + q_cut(7, True) + q_ack(0) + q_recv(stale=0)
    + q_recv(1) + q_ack(),
    "cut-buffered-is-kill": q_setup(buffered=True) + q_pub() + q_recv() + q_ack() + q_pub() + q_recv()
    + q_cut(4) + q_recv() + q_ack(),
    "cut-many-seeds": q_setup(q_group(attempts=A5)) + q_pub() + q_pub()
    + q_all(*[q_recv() + q_cut(s) for s in (0, 1, 2, 3, 250, 251)]),
    "cut-after-dead-letter": q_setup(q_group(attempts=A1)) + q_pub() + q_recv() + q_reject() + q_cut(11)
    + q_recv() + q_metrics(),
    "cut-seg8k": q_setup(seg8k=True) + q_batch(5) + q_batch(5) + q_recv() + q_ack() + q_recv() + q_cut(13)
    + q_recv() + q_ack(),
    "clean-close-then-cut": q_setup() + q_pub() + q_pub(delay=D6) + q_recv() + q_nack(0, N6) + q_recv()
    + q_cut(23, clean=True) + q_recv() + q_wait(WAIT4) + q_wait(WAIT4) + q_recv() + q_ack() + q_ack(),
    "clean-close-buffered-cut": q_setup(buffered=True) + q_pub() + q_pub() + q_recv() + q_ack() + q_recv()
    + q_cut(29, clean=True) + q_recv() + q_ack(),
    "clean-close-buffered-keep": q_setup(buffered=True) + q_pub() + q_recv() + q_recv(1) + q_cut(31, True, True)
    + q_ack(0) + q_ack(0) + q_recv(stale=1) + q_recv() + q_ack() + q_recv(1) + q_ack(),
    "clean-close-kill": q_setup() + q_pub() + q_recv() + q_kill(clean=True) + q_recv() + q_ack(),
    # Rejoins.
    "rejoin-idle": q_setup() + q_pub() + q_recv() + q_ack() + q_metrics() + q_rejoin() + q_metrics()
    + q_pub() + q_recv() + q_ack(),
    "rejoin-held": q_setup() + q_pub() + q_recv() + q_rejoin() + q_metrics() + q_ack() + q_rejoin()
    + q_metrics(),
    "rejoin-after-nack-too-long": q_setup() + q_pub() + q_recv() + q_nack(0, NLONG) + q_rejoin() + q_recv()
    + q_ack(),
    "rejoin-then-cut": q_setup() + q_pub() + q_recv() + q_drop() + q_rejoin(1) + q_rejoin(0) + q_cut(17)
    + q_recv() + q_ack(),
    # Both groups, side by side.
    "two-groups": q_setup(q_group(vis=V8, attempts=A2, window=W2, filt=F_A_ANY),
                          q_group(vis=V12, attempts=A1, window=W4, filt=F_NONE), dead=True)
    + q_batch(4, 5, K_AX) + q_pub(9, D2, K_AYZ) + q_recv(0) + q_recv(1) + q_nack(0) + q_reject(0) + q_recv(0)
    + q_recv(1) + q_metrics(0) + q_metrics(1) + q_kill(True) + q_recv(0) + q_recv(1) + q_ack(0) + q_metrics(1),
    "everything": q_setup(q_group(vis=V5, attempts=A2, window=W4, filt=F_A_ANY), q_group(vis=V8, attempts=A3))
    + q_pub(3, D2, K_AX) + q_batch(3, 4, K_AYZ) + q_recv(0) + q_recv(1, 1) + q_ack(0) + q_nack(0, N1)
    + q_recv(0) + q_reject(0) + q_recv(1) + q_drop(0) + q_recv(0) + q_extend(0, E3) + q_wait(WAIT2)
    + q_metrics(0) + q_metrics(1) + q_kill(True) + q_recv(0, 0, 0, 1) + q_ack(0) + q_cut(21) + q_rejoin(1)
    + q_recv(1) + q_ack(),
    "truncated-op": q_setup() + q_pub() + [Q_CUT, 1],
    "max-ops": q_setup(q_group(vis=V20), q_group(vis=V20)) + q_all(*[q_pub() + q_recv() + q_ack() for _ in range(50)]),
    "max-reopens": q_setup() + q_pub() + q_all(*[q_kill() + q_cut(s) for s in range(5)]) + q_recv() + q_ack(),
}


def q_random_seeds(count):
    import random
    seeds = {}
    for k in range(count):
        rng = random.Random(0x51 + k)
        setup = [rng.randrange(256), rng.randrange(256), rng.randrange(16)]
        seeds["random-%03d" % k] = setup + q_random(rng, rng.randrange(10, 60))
    return seeds


QUEUE_OPS.update(q_random_seeds(80))


def write(target, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", target)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        assert all(0 <= b < 256 for b in data), name
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(bytes(data))
    print(f"wrote {len(seeds)} seeds to {out}")


def main():
    write("lock_ops", SEEDS)
    write("log_ops", LOG_OPS)
    write("log_recovery", LOG_RECOVERY)
    write("queue_ops", QUEUE_OPS)


if __name__ == "__main__":
    main()
