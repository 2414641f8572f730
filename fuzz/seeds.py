#!/usr/bin/env python3
"""Writes the hand-made seeds (seed-*) of fuzz/corpus/lock_ops/, log_ops/ and
log_recovery/. Each target's encoding is documented at the top of its harness,
tests/support/<target>.rs. Run from anywhere:
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


if __name__ == "__main__":
    main()
