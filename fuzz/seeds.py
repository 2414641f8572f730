#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/lock_ops/ (seed-*). The encoding is
documented at the top of tests/support/lock_ops.rs. Run from anywhere:
    python3 fuzz/seeds.py
"""
import os

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


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "lock_ops")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        assert all(0 <= b < 256 for b in data), name
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(bytes(data))
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
