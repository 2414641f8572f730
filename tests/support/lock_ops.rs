//! Single-threaded lock-manager operations decoded from raw bytes, each
//! result checked against a simple model. Shared by the `lock_ops` fuzz target
//! (`fuzz/fuzz_targets/lock_ops.rs`) and `tests/fuzz_replay.rs`.
//!
//! Encoding (stops as soon as the bytes run out, or after [`MAX_OPS`] ops):
//!
//! - byte 0 picks the [`LockConfig`]: shards 1, 2, 8 or 64 (bits 0-1), idle
//!   entries per shard 0, 1, 4 or 32 (bits 2-3), spin limit 0, 1, 4 or 10
//!   (bits 4-5), so `0x3f` is the default configuration;
//! - then each op is one byte (`byte % 13`) followed by its operands:
//!
//! | op | name                 | operands |
//! |----|----------------------|----------|
//! | 0  | `try_lock`           | `who` |
//! | 1  | exclusive, no wait   | `who` |
//! | 2  | shared, no wait      | `who` |
//! | 3  | `lock_for(ZERO)`     | `who` |
//! | 4  | exclusive, timeout 0 | `who` |
//! | 5  | shared, timeout 0    | `who` |
//! | 6  | `release` guard i    | `i` (modulo the live guards) |
//! | 7  | drop guard i         | `i` |
//! | 8  | `lock_all`, timeout 0 | owner (bits 0-1) and key count - 1 (bits 2-7, mod 3); a byte of keys (2 bits each) |
//! | 9  | `shrink`             | |
//! | 10 | `stamp`              | key (bits 0-1) |
//! | 11 | `validate` stamp i   | `i` |
//! | 12 | `stats`              | |
//!
//! `who` is one byte: owner in bits 0-1 (0-2: sessions, 3: the calling
//! thread) and key in bits 2-3. Nothing waits for real: a timed request has a
//! zero timeout and no other thread ever releases, so a run is deterministic.

use std::time::Duration;

use tollgate::{LockConfig, LockError, LockGuard, LockManager, LockMode, LockRequest, LockSet, LockStats, OwnerKind};
use tollgate::{Session, SessionOwned, Stamp};

/// At most this many ops per run.
const MAX_OPS: usize = 256;
/// At most this many live guards (lock sets count as one); acquisitions
/// beyond it are skipped.
const MAX_GUARDS: usize = 64;
/// Stamps remembered for `validate`.
const MAX_STAMPS: usize = 8;
/// The keys; `lock_all` takes them in this string order.
const KEYS: [&str; 4] = ["sku:1", "sku:2", "cart:7", "a"];
/// Sessions are owners `0..SESSIONS`; the calling thread is owner `THREAD`.
const SESSIONS: usize = 3;
const THREAD: usize = SESSIONS;
/// Shared holders an entry names (tollgate's `READER_SLOTS`).
const READER_SLOTS: usize = 4;

/// Runs the ops encoded in `data` and panics on any divergence from the model.
pub fn run(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let config = bytes.next().unwrap_or(0);
    let locks = LockManager::with_config(LockConfig {
        shards: [1, 2, 8, 64][usize::from(config & 3)],
        idle_entries_per_shard: [0, 1, 4, 32][usize::from((config >> 2) & 3)],
        spin_limit: [0, 1, 4, 10][usize::from((config >> 4) & 3)],
        ..LockConfig::default()
    });
    let sessions: [Session; SESSIONS] = std::array::from_fn(|_| locks.session());
    let mut run =
        Run { locks: &locks, sessions: &sessions, model: Model::default(), guards: Vec::new(), stamps: Vec::new() };
    for step in 0..MAX_OPS {
        let Some(op) = bytes.next() else { break };
        if run.step(step, op, &mut bytes).is_none() {
            break;
        }
    }
    run.finish();
}

/// How an acquisition is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    TryLock,
    ExclusiveNoWait,
    SharedNoWait,
    LockForZero,
    ExclusiveTimedZero,
    SharedTimedZero,
}

impl How {
    fn mode(self) -> LockMode {
        match self {
            How::SharedNoWait | How::SharedTimedZero => LockMode::Shared,
            _ => LockMode::Exclusive,
        }
    }

    fn waits(self) -> bool {
        matches!(self, How::LockForZero | How::ExclusiveTimedZero | How::SharedTimedZero)
    }

    fn request(self) -> LockRequest {
        let request = match self.mode() {
            LockMode::Exclusive => LockRequest::exclusive(),
            LockMode::Shared => LockRequest::shared(),
        };
        if self.waits() { request.timeout(Duration::ZERO) } else { request.no_wait() }
    }
}

/// Why the model refuses an acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The owner holds the key shared, named in a reader slot, and asks for it exclusively.
    Upgrade,
    /// Held by someone else (or by this owner, shared but unnamed): `WouldBlock` or `Timeout`.
    Busy,
}

/// How a key is held, in the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Hold {
    #[default]
    Free,
    /// `refs` guards share the grant (1 + nested acquisitions).
    Exclusive { owner: usize, token: u64, refs: usize },
    /// One element per shared grant.
    Shared { owners: Vec<usize> },
}

#[derive(Debug, Clone, Default)]
struct KeyModel {
    hold: Hold,
    /// tollgate's reader slots: first free slot taken on a shared grant, first
    /// slot naming the owner vacated on its release.
    slots: [Option<usize>; READER_SLOTS],
    /// Highest fencing token seen for this key (0: none).
    max_token: u64,
    /// Non-nested exclusive grants made, including those `lock_all` rolled back.
    exclusive_grants: u64,
}

#[derive(Debug, Default)]
struct Model {
    keys: [KeyModel; KEYS.len()],
    /// Non-nested grants made (what `LockStats::grants` counts).
    grants: u64,
    /// Acquisitions that queued and timed out.
    timeouts: u64,
}

impl Model {
    /// Whether `owner` may take `key` exclusively now; `Ok(true)` for a nested grant.
    fn expect_exclusive(&self, key: usize, owner: usize) -> Result<bool, Refusal> {
        let model = &self.keys[key];
        match &model.hold {
            Hold::Free => Ok(false),
            Hold::Exclusive { owner: holder, .. } if *holder == owner => Ok(true),
            Hold::Exclusive { .. } => Err(Refusal::Busy),
            Hold::Shared { .. } if model.slots.contains(&Some(owner)) => Err(Refusal::Upgrade),
            Hold::Shared { .. } => Err(Refusal::Busy),
        }
    }

    /// Whether `owner` may take `key` shared now; `Ok(true)` for a nested
    /// grant of its exclusive hold.
    fn expect_shared(&self, key: usize, owner: usize) -> Result<bool, Refusal> {
        match &self.keys[key].hold {
            Hold::Exclusive { owner: holder, .. } if *holder == owner => Ok(true),
            Hold::Exclusive { .. } => Err(Refusal::Busy),
            Hold::Free | Hold::Shared { .. } => Ok(false),
        }
    }

    fn check_fresh_token(&mut self, key: usize, token: u64, what: &str) {
        let model = &mut self.keys[key];
        assert!(
            token > model.max_token,
            "{what} of {:?}: fencing token {token} is not above the highest seen ({})",
            KEYS[key],
            model.max_token
        );
        model.max_token = token;
        self.grants += 1;
    }

    /// Records an exclusive grant (new or nested) with `token`.
    fn grant_exclusive(&mut self, key: usize, owner: usize, token: u64, nested: bool, what: &str) -> Grant {
        if nested {
            let Hold::Exclusive { token: held, refs, .. } = &mut self.keys[key].hold else {
                unreachable!("nested grant of a key not held exclusively");
            };
            assert_eq!(token, *held, "{what} of {:?}: a nested grant must keep the fencing token", KEYS[key]);
            *refs += 1;
        } else {
            self.check_fresh_token(key, token, what);
            let model = &mut self.keys[key];
            model.exclusive_grants += 1;
            model.hold = Hold::Exclusive { owner, token, refs: 1 };
        }
        Grant { key, mode: LockMode::Exclusive, owner, token }
    }

    fn grant_shared(&mut self, key: usize, owner: usize, token: u64, what: &str) -> Grant {
        self.check_fresh_token(key, token, what);
        let model = &mut self.keys[key];
        match &mut model.hold {
            Hold::Free => model.hold = Hold::Shared { owners: vec![owner] },
            Hold::Shared { owners } => owners.push(owner),
            Hold::Exclusive { .. } => unreachable!("shared grant of a key held exclusively"),
        }
        if let Some(slot) = model.slots.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(owner);
        }
        Grant { key, mode: LockMode::Shared, owner, token }
    }

    fn release(&mut self, grant: &Grant) {
        let model = &mut self.keys[grant.key];
        match (&mut model.hold, grant.mode) {
            (Hold::Exclusive { owner, token, refs }, LockMode::Exclusive) => {
                assert_eq!((*owner, *token), (grant.owner, grant.token), "model: released a grant it does not hold");
                *refs -= 1;
                if *refs == 0 {
                    model.hold = Hold::Free;
                }
            }
            (Hold::Shared { owners }, LockMode::Shared) => {
                let at = owners.iter().position(|&o| o == grant.owner).expect("model: shared holder");
                owners.swap_remove(at);
                if owners.is_empty() {
                    model.hold = Hold::Free;
                }
                if let Some(slot) = model.slots.iter_mut().find(|slot| **slot == Some(grant.owner)) {
                    *slot = None;
                }
            }
            (hold, mode) => unreachable!("model: releasing a {mode:?} grant of a key in state {hold:?}"),
        }
    }

    /// Outstanding grants: an exclusive grant counts once however nested.
    fn held(&self) -> u64 {
        self.keys
            .iter()
            .map(|key| match &key.hold {
                Hold::Free => 0,
                Hold::Exclusive { .. } => 1,
                Hold::Shared { owners } => owners.len() as u64,
            })
            .sum()
    }

    fn keys_held(&self) -> u64 {
        self.keys.iter().filter(|key| key.hold != Hold::Free).count() as u64
    }
}

/// One grant a guard stands for, as the model expects it.
#[derive(Debug, Clone, Copy)]
struct Grant {
    key: usize,
    mode: LockMode,
    owner: usize,
    token: u64,
}

enum Handle<'m> {
    Thread(LockGuard<'m>),
    Session(LockGuard<'m, SessionOwned>),
    ThreadSet(LockSet<'m>),
    SessionSet(LockSet<'m, SessionOwned>),
}

/// A live guard (or lock set) and the grants it stands for.
struct Held<'m> {
    handle: Handle<'m>,
    grants: Vec<Grant>,
}

fn check_guard<O: OwnerKind>(guard: &LockGuard<'_, O>, grant: &Grant) {
    assert_eq!(guard.key(), KEYS[grant.key], "guard key");
    assert_eq!(guard.mode(), grant.mode, "guard mode of {:?}", KEYS[grant.key]);
    assert_eq!(guard.fencing_token().get(), grant.token, "guard fencing token of {:?}", KEYS[grant.key]);
}

fn check_set<O: OwnerKind>(set: &LockSet<'_, O>, grants: &[Grant]) {
    assert_eq!(set.len(), grants.len(), "lock set size");
    assert_eq!(set.is_empty(), grants.is_empty());
    for (guard, grant) in set.guards().iter().zip(grants) {
        check_guard(guard, grant);
    }
}

impl Held<'_> {
    fn check(&self) {
        match &self.handle {
            Handle::Thread(guard) => check_guard(guard, &self.grants[0]),
            Handle::Session(guard) => check_guard(guard, &self.grants[0]),
            Handle::ThreadSet(set) => check_set(set, &self.grants),
            Handle::SessionSet(set) => check_set(set, &self.grants),
        }
    }

    fn release(self) -> Result<(), LockError> {
        match self.handle {
            Handle::Thread(guard) => guard.release(),
            Handle::Session(guard) => guard.release(),
            Handle::ThreadSet(set) => set.release(),
            Handle::SessionSet(set) => set.release(),
        }
    }
}

struct StampRecord {
    stamp: Stamp<'static>,
    key: usize,
    /// The key's `exclusive_grants` when stamped.
    exclusive_grants: u64,
    /// Held exclusively when stamped: never valid.
    held_exclusively: bool,
}

struct Run<'m> {
    locks: &'m LockManager,
    sessions: &'m [Session; SESSIONS],
    model: Model,
    guards: Vec<Held<'m>>,
    stamps: Vec<StampRecord>,
}

impl<'m> Run<'m> {
    /// Runs one op; `None` when the bytes ran out inside it.
    fn step(&mut self, step: usize, op: u8, bytes: &mut impl Iterator<Item = u8>) -> Option<()> {
        match op % 13 {
            0 => self.acquire(step, bytes.next()?, How::TryLock),
            1 => self.acquire(step, bytes.next()?, How::ExclusiveNoWait),
            2 => self.acquire(step, bytes.next()?, How::SharedNoWait),
            3 => self.acquire(step, bytes.next()?, How::LockForZero),
            4 => self.acquire(step, bytes.next()?, How::ExclusiveTimedZero),
            5 => self.acquire(step, bytes.next()?, How::SharedTimedZero),
            6 => self.release(bytes.next()?, true),
            7 => self.release(bytes.next()?, false),
            8 => {
                let (who, keys) = (bytes.next()?, bytes.next()?);
                self.lock_all(step, who, keys);
            }
            9 => self.shrink(),
            10 => self.stamp(bytes.next()?),
            11 => self.validate(bytes.next()?),
            _ => {
                self.check_stats("stats op");
            }
        }
        Some(())
    }

    fn acquire(&mut self, step: usize, who: u8, how: How) {
        if self.guards.len() >= MAX_GUARDS {
            return;
        }
        let (owner, key) = (usize::from(who & 3), usize::from((who >> 2) & 3));
        let what = format!("op {step}: {how:?} by owner {owner}");
        let expected = match how.mode() {
            LockMode::Exclusive => self.model.expect_exclusive(key, owner),
            LockMode::Shared => self.model.expect_shared(key, owner),
        };
        let name = KEYS[key];
        let (handle, mode, token) = if owner == THREAD {
            let locks = self.locks;
            let result = match how {
                How::TryLock => locks.try_lock(name),
                How::LockForZero => locks.lock_for(name, Duration::ZERO),
                _ => locks.acquire(name, how.request()),
            };
            match result {
                Ok(guard) => {
                    let (mode, token) = (guard.mode(), guard.fencing_token().get());
                    (Ok(Handle::Thread(guard)), mode, token)
                }
                Err(error) => (Err(error), how.mode(), 0),
            }
        } else {
            let session = &self.sessions[owner];
            let result = match how {
                How::TryLock => session.try_lock(name),
                How::LockForZero => session.lock_for(name, Duration::ZERO),
                _ => session.acquire(name, how.request()),
            };
            match result {
                Ok(guard) => {
                    let (mode, token) = (guard.mode(), guard.fencing_token().get());
                    (Ok(Handle::Session(guard)), mode, token)
                }
                Err(error) => (Err(error), how.mode(), 0),
            }
        };
        match (expected, handle) {
            (Ok(nested), Ok(handle)) => {
                let grant = if nested || how.mode() == LockMode::Exclusive {
                    assert_eq!(mode, LockMode::Exclusive, "{what} of {name:?}: mode (nested: {nested})");
                    self.model.grant_exclusive(key, owner, token, nested, &what)
                } else {
                    assert_eq!(mode, LockMode::Shared, "{what} of {name:?}: mode");
                    self.model.grant_shared(key, owner, token, &what)
                };
                let held = Held { handle, grants: vec![grant] };
                held.check();
                self.guards.push(held);
            }
            (Ok(nested), Err(error)) => {
                panic!(
                    "{what} of {name:?}: expected a grant (nested: {nested}), got {error:?}; model {:?}",
                    self.model.keys[key]
                )
            }
            (Err(refusal), Ok(_)) => {
                panic!(
                    "{what} of {name:?}: expected {refusal:?}, got a grant (token {token}); model {:?}",
                    self.model.keys[key]
                )
            }
            (Err(refusal), Err(error)) => {
                self.check_refusal(refusal, how.waits(), &error, &format!("{what} of {name:?}"), key);
            }
        }
    }

    fn check_refusal(&mut self, refusal: Refusal, waits: bool, error: &LockError, what: &str, key: usize) {
        let ok = match (refusal, error) {
            (Refusal::Upgrade, LockError::Upgrade) => true,
            (Refusal::Busy, LockError::WouldBlock) => !waits,
            (Refusal::Busy, LockError::Timeout { .. }) => waits,
            _ => false,
        };
        assert!(ok, "{what}: expected {refusal:?} (timed: {waits}), got {error:?}; model {:?}", self.model.keys[key]);
        if matches!(error, LockError::Timeout { .. }) {
            self.model.timeouts += 1;
        }
    }

    fn release(&mut self, index: u8, explicit: bool) {
        if self.guards.is_empty() {
            return;
        }
        let held = self.guards.swap_remove(usize::from(index) % self.guards.len());
        held.check();
        let grants = held.grants.clone();
        if explicit {
            let result = held.release();
            assert_eq!(result, Ok(()), "release of {grants:?}");
        } else {
            drop(held);
        }
        for grant in &grants {
            self.model.release(grant);
        }
    }

    fn lock_all(&mut self, step: usize, who: u8, key_bits: u8) {
        if self.guards.len() >= MAX_GUARDS {
            return;
        }
        let owner = usize::from(who & 3);
        let count = 1 + usize::from(who >> 2) % 3;
        let keys: Vec<usize> = (0..count).map(|i| usize::from((key_bits >> (2 * i)) & 3)).collect();
        let names: Vec<&'static str> = keys.iter().map(|&key| KEYS[key]).collect();
        let what = format!("op {step}: lock_all({names:?}) by owner {owner}");
        let mut distinct = keys.clone();
        distinct.sort_unstable_by_key(|&key| KEYS[key]);
        distinct.dedup();
        // Taken in key order; on the first refusal those taken are released.
        let mut expected = Ok(Vec::new());
        for &key in &distinct {
            match self.model.expect_exclusive(key, owner) {
                Ok(nested) => expected.as_mut().expect("still granting").push((key, nested)),
                Err(refusal) => {
                    let taken = std::mem::replace(&mut expected, Err((refusal, key)));
                    // Rolled back, but those fresh grants happened (new tokens).
                    for (taken, nested) in taken.expect("still granting") {
                        if !nested {
                            self.model.keys[taken].exclusive_grants += 1;
                            self.model.grants += 1;
                        }
                    }
                    break;
                }
            }
        }
        let result = if owner == THREAD {
            self.locks.lock_all(&names, Duration::ZERO).map(|set| {
                let tokens = set.guards().iter().map(|guard| guard.fencing_token().get()).collect::<Vec<_>>();
                (Handle::ThreadSet(set), tokens)
            })
        } else {
            self.sessions[owner].lock_all(&names, Duration::ZERO).map(|set| {
                let tokens = set.guards().iter().map(|guard| guard.fencing_token().get()).collect::<Vec<_>>();
                (Handle::SessionSet(set), tokens)
            })
        };
        match (expected, result) {
            (Ok(expected), Ok((handle, tokens))) => {
                assert_eq!(tokens.len(), expected.len(), "{what}: lock set size");
                let grants = expected
                    .iter()
                    .zip(tokens)
                    .map(|(&(key, nested), token)| self.model.grant_exclusive(key, owner, token, nested, &what))
                    .collect();
                let held = Held { handle, grants };
                held.check();
                self.guards.push(held);
            }
            (Ok(expected), Err(error)) => panic!("{what}: expected a grant of {expected:?}, got {error:?}"),
            (Err((refusal, key)), Ok(_)) => {
                panic!("{what}: expected {refusal:?} on {:?}, got a lock set; model {:?}", KEYS[key], self.model.keys)
            }
            (Err((refusal, key)), Err(error)) => {
                self.check_refusal(refusal, true, &error, &format!("{what} (on {:?})", KEYS[key]), key);
                // Nothing stays taken.
                self.check_stats(&what);
            }
        }
    }

    fn shrink(&mut self) {
        self.locks.shrink();
        let stats = self.check_stats("shrink");
        assert_eq!(stats.entries, self.model.keys_held(), "after shrink only held keys keep an entry");
    }

    fn stamp(&mut self, key_bits: u8) {
        let key = usize::from(key_bits & 3);
        let record = StampRecord {
            stamp: self.locks.stamp(KEYS[key]),
            key,
            exclusive_grants: self.model.keys[key].exclusive_grants,
            held_exclusively: matches!(self.model.keys[key].hold, Hold::Exclusive { .. }),
        };
        if self.stamps.len() < MAX_STAMPS {
            self.stamps.push(record);
        } else {
            self.stamps[usize::from(key_bits >> 2) % MAX_STAMPS] = record;
        }
    }

    fn validate(&mut self, index: u8) {
        if self.stamps.is_empty() {
            return;
        }
        let record = &self.stamps[usize::from(index) % self.stamps.len()];
        let valid = self.locks.validate(&record.stamp);
        let model = &self.model.keys[record.key];
        if record.held_exclusively {
            assert!(!valid, "validate of {:?}: stamped while held exclusively, yet valid", KEYS[record.key]);
        }
        if model.exclusive_grants != record.exclusive_grants {
            assert!(
                !valid,
                "validate of {:?}: {} exclusive grant(s) since the stamp, yet valid",
                KEYS[record.key],
                model.exclusive_grants - record.exclusive_grants
            );
        }
    }

    fn check_stats(&self, what: &str) -> LockStats {
        let stats = self.locks.stats();
        let model = &self.model;
        assert_eq!(stats.held, model.held(), "{what}: stats().held; model {:?}; {stats:?}", model.keys);
        assert_eq!(stats.grants, model.grants, "{what}: stats().grants; {stats:?}");
        assert_eq!(stats.timeouts, model.timeouts, "{what}: stats().timeouts; {stats:?}");
        assert_eq!(stats.contended, model.timeouts, "{what}: stats().contended (every queued request timed out)");
        assert_eq!(stats.waiting, 0, "{what}: stats().waiting");
        assert_eq!((stats.interrupts, stats.deadlocks, stats.leases_expired), (0, 0, 0), "{what}: {stats:?}");
        assert!(stats.entries >= model.keys_held(), "{what}: fewer entries than held keys; {stats:?}");
        stats
    }

    /// Drops everything, then checks that every key is free (with a fresh
    /// token) and that the table empties.
    fn finish(mut self) {
        self.check_stats("end");
        for held in std::mem::take(&mut self.guards) {
            held.check();
            let grants = held.grants.clone();
            drop(held);
            for grant in &grants {
                self.model.release(grant);
            }
        }
        assert_eq!(self.locks.stats().held, 0, "end: something is still held after dropping every guard");
        self.check_stats("end, all dropped");
        for (key, name) in KEYS.iter().enumerate() {
            let guard = self.locks.try_lock(name).unwrap_or_else(|error| panic!("end: try_lock({name:?}): {error:?}"));
            let token = guard.fencing_token().get();
            self.model.grant_exclusive(key, THREAD, token, false, "end: try_lock");
            drop(guard);
            self.model.release(&Grant { key, mode: LockMode::Exclusive, owner: THREAD, token });
        }
        self.locks.shrink();
        let stats = self.check_stats("end, shrunk");
        assert_eq!(stats.entries, 0, "end: entries left after shrink with nothing held");
    }
}
