//! The lock word: one `AtomicU64` per key holding its whole grant state, so
//! that an uncontended acquire or release is a single compare-and-swap.
//!
//! | bits   | name      | invariant |
//! |--------|-----------|-----------|
//! | 0      | EXCLUSIVE | held exclusively; the payload is the holder's owner id |
//! | 1      | QUEUED    | the wait queue is non-empty; fast paths neither grant nor release |
//! | 2      | DEAD      | the entry is unlinked from the table; set only on an idle word |
//! | 3      | LEASED    | the exclusive grant has a lease; only slow paths touch it |
//! | 4      | NESTED    | the exclusive holder has nested acquisitions (`depth > 0`); only slow paths touch it |
//! | 8..64  | payload   | owner id if EXCLUSIVE, else the number of shared grants |
//!
//! | word                    | state |
//! |-------------------------|-------|
//! | `0`                     | idle: free, nobody waiting; the only state an entry may die from |
//! | `n << 8`                | `n` shared grants |
//! | `id << 8 \| EXCLUSIVE`  | held by owner `id` (`\| LEASED` with a lease) |
//! | `x \| QUEUED`           | as `x`, with waiters; outside the queue mutex `x` is never free |
//! | `DEAD`                  | unlinked; lookups retry |
//!
//! The fast paths below only ever move between `0`, `n << 8` and
//! `id << 8 | EXCLUSIVE`; everything involving `QUEUED`, `LEASED`, `NESTED`
//! or a waiter happens in `wait.rs` under the entry's queue mutex. Nesting is
//! a slow path because one owner may act on two threads at once (a shared
//! `Session`, a guard moved away): with NESTED in the word, a release can
//! never free a grant that has nested acquisitions outstanding.

use std::collections::VecDeque;

use crossbeam_epoch as epoch;

use crate::sync::{Arc, AtomicU64, Mutex, Ordering, fence};

use super::wait::Waiter;

/// Held exclusively; the payload is the holder's owner id.
pub(crate) const EXCLUSIVE: u64 = 1 << 0;
/// The wait queue is non-empty: fast paths must take the slow path.
pub(crate) const QUEUED: u64 = 1 << 1;
/// The entry has been unlinked; nothing may be granted on it.
pub(crate) const DEAD: u64 = 1 << 2;
/// The exclusive grant carries a lease and may be revoked when it runs out.
pub(crate) const LEASED: u64 = 1 << 3;
/// The exclusive holder has nested acquisitions (`Entry::depth > 0`).
pub(crate) const NESTED: u64 = 1 << 4;
/// Where the payload (owner id or shared count) starts.
pub(crate) const PAYLOAD_SHIFT: u32 = 8;
/// One shared grant, in payload units.
pub(crate) const ONE_SHARED: u64 = 1 << PAYLOAD_SHIFT;
/// Owner ids must fit the payload.
pub(crate) const OWNER_ID_MAX: u64 = u64::MAX >> PAYLOAD_SHIFT;
/// How many shared holders an entry can name (for reentrancy and deadlock
/// detection); further shared holders are counted but anonymous.
pub(crate) const READER_SLOTS: usize = 4;

const _: () = assert!(NESTED < ONE_SHARED, "flags must stay below the payload");
const _: () = assert!(READER_SLOTS > 0);

/// The word of an unleased exclusive grant to `owner`.
#[inline]
pub(crate) const fn exclusive_word(owner: u64) -> u64 {
    (owner << PAYLOAD_SHIFT) | EXCLUSIVE
}

/// The payload: an owner id if `word & EXCLUSIVE`, else the shared count.
#[inline]
pub(crate) const fn payload(word: u64) -> u64 {
    word >> PAYLOAD_SHIFT
}

/// Free: no exclusive holder and no shared holders (waiters may exist).
#[inline]
pub(crate) const fn is_free(word: u64) -> bool {
    word & (EXCLUSIVE | DEAD) == 0 && payload(word) == 0
}

/// Whether `owner` is the exclusive holder named by `word`.
#[inline]
pub(crate) const fn held_exclusively_by(word: u64, owner: u64) -> bool {
    word & EXCLUSIVE != 0 && payload(word) == owner
}

/// Keys up to this many bytes are stored inside the entry (no allocation).
pub(crate) const KEY_INLINE_BYTES_MAX: usize = 32;

/// A key, stored inline when short (most keys: `"sku:42"`, `"order:1001"`)
/// so that creating an entry costs one allocation, not two.
pub(crate) enum KeyBuf {
    Inline { len: u8, bytes: [u8; KEY_INLINE_BYTES_MAX] },
    Heap(Box<str>),
}

const _: () = assert!(KEY_INLINE_BYTES_MAX <= u8::MAX as usize);

impl KeyBuf {
    fn new(key: &str) -> Self {
        if key.len() > KEY_INLINE_BYTES_MAX {
            return Self::Heap(key.into());
        }
        let mut bytes = [0; KEY_INLINE_BYTES_MAX];
        bytes[..key.len()].copy_from_slice(key.as_bytes());
        Self::Inline { len: key.len() as u8, bytes }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(key) => key.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("a key is copied whole from a &str")
    }
}

/// The queue of waiters for one key, oldest first.
pub(crate) type Queue = VecDeque<Arc<Waiter>>;

/// The table's record for one key: its lock word and everything a grant needs.
pub(crate) struct Entry {
    /// The lock word; see the module documentation.
    pub(crate) word: AtomicU64,
    /// The last fencing token granted on this key. An exclusive grantor is its
    /// only writer while the grant lasts; shared grants `fetch_add`.
    pub(crate) token: AtomicU64,
    /// Nested acquisitions by the exclusive holder beyond the first; non-zero
    /// exactly while the word has NESTED. Written only under `queue`.
    pub(crate) depth: AtomicU64,
    /// When the exclusive grant's lease runs out (`Clock` nanoseconds); 0 for
    /// none. Written only under `queue`.
    pub(crate) lease_deadline_ns: AtomicU64,
    /// Owner ids of up to `READER_SLOTS` shared holders; 0 marks a free slot.
    pub(crate) readers: [AtomicU64; READER_SLOTS],
    /// Waiters, oldest first; also serialises every slow-path change of `word`.
    pub(crate) queue: Mutex<Queue>,
    /// `token` when the entry was created: grants made = `token - token_initial`.
    pub(crate) token_initial: u64,
    /// The key's hash, for chains and resizing.
    pub(crate) hash: u64,
    /// The key.
    pub(crate) key: KeyBuf,
    /// The next entry in the same bucket chain.
    pub(crate) next: epoch::Atomic<Entry>,
}

/// What a fast-path attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    /// Granted with this fencing token.
    Granted(u64),
    /// Held (possibly by the caller: nesting is a slow path), queued, leased
    /// or unusual: take the slow path.
    Slow,
    /// The entry died; look the key up again.
    Dead,
}

impl Entry {
    /// A new entry, created already granted to `owner` in the given word state
    /// (`exclusive_word(owner)` or one shared grant), with fencing tokens
    /// continuing above `token_floor`.
    pub(crate) fn new_granted(key: &str, hash: u64, owner: u64, exclusive: bool, token_floor: u64) -> Self {
        let mut readers: [AtomicU64; READER_SLOTS] = std::array::from_fn(|_| AtomicU64::new(0));
        let word = if exclusive {
            exclusive_word(owner)
        } else {
            readers[0] = AtomicU64::new(owner);
            ONE_SHARED
        };
        Self {
            word: AtomicU64::new(word),
            token: AtomicU64::new(token_floor + 1),
            depth: AtomicU64::new(0),
            lease_deadline_ns: AtomicU64::new(0),
            readers,
            queue: Mutex::new(VecDeque::new()),
            token_initial: token_floor,
            hash,
            key: KeyBuf::new(key),
            next: epoch::Atomic::null(),
        }
    }

    /// Tries to take the key exclusively for `owner` without waiting.
    #[inline]
    pub(crate) fn lock_exclusive_fast(&self, owner: u64) -> Fast {
        match self.word.compare_exchange(0, exclusive_word(owner), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Fast::Granted(self.next_exclusive_token()),
            Err(DEAD) => Fast::Dead,
            Err(_) => Fast::Slow,
        }
    }

    /// Tries to take the key shared for `owner` without waiting. Refuses (goes
    /// slow) whenever anyone waits, so that waiters are not overtaken.
    #[inline]
    pub(crate) fn lock_shared_fast(&self, owner: u64) -> Fast {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & (EXCLUSIVE | QUEUED | DEAD | LEASED) != 0 {
                return if word == DEAD { Fast::Dead } else { Fast::Slow };
            }
            match self.word.compare_exchange_weak(word, word + ONE_SHARED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        self.occupy_reader_slot(owner);
        Fast::Granted(self.token.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Called by a new exclusive holder right after winning the word: the
    /// previous holder's release (Release) made its token visible to our
    /// Acquire, and nobody else writes the token while we hold the key.
    ///
    /// The store is Release so that an optimistic reader that loads the new
    /// token (Acquire, in `stamp`) also sees the EXCLUSIVE word set before
    /// it, and refuses the stamp. With a Relaxed store a reader could pair
    /// the new token with a stale idle word and validate a torn read (Miri
    /// found this; `optimistic_reads_never_validate_a_torn_pair`).
    #[inline]
    pub(crate) fn next_exclusive_token(&self) -> u64 {
        let token = self.token.load(Ordering::Relaxed) + 1;
        self.token.store(token, Ordering::Release);
        token
    }

    /// Releases an unleased, unnested exclusive grant of `owner`'s. Returns
    /// `false` if waiters are queued or acquisitions are nested, in which case
    /// the caller must release on the slow path.
    #[inline]
    pub(crate) fn unlock_exclusive_fast(&self, owner: u64) -> bool {
        self.word.compare_exchange(exclusive_word(owner), 0, Ordering::Release, Ordering::Relaxed).is_ok()
    }

    /// Releases one shared grant of `owner`'s. Returns `false` if this is the
    /// last shared grant and waiters are queued: the caller must then release
    /// it on the slow path, which hands the key to the next waiter.
    #[inline]
    pub(crate) fn unlock_shared_fast(&self, owner: u64) -> bool {
        self.vacate_reader_slot(owner);
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            debug_assert!(word & EXCLUSIVE == 0 && payload(word) > 0, "shared release of a word not held shared");
            if word & QUEUED != 0 && payload(word) == 1 {
                return false;
            }
            match self.word.compare_exchange_weak(word, word - ONE_SHARED, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Records `owner` as a shared holder in a free slot, if there is one.
    pub(crate) fn occupy_reader_slot(&self, owner: u64) {
        for slot in &self.readers {
            if slot.load(Ordering::Relaxed) == 0
                && slot.compare_exchange(0, owner, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return;
            }
        }
    }

    /// Forgets one slot naming `owner`, if any. Called before the shared count
    /// drops, so a slot never names an owner that no longer holds the key.
    pub(crate) fn vacate_reader_slot(&self, owner: u64) {
        for slot in &self.readers {
            if slot.load(Ordering::Relaxed) == owner
                && slot.compare_exchange(owner, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return;
            }
        }
    }

    /// Whether a slot names `owner` as a shared holder.
    pub(crate) fn names_reader(&self, owner: u64) -> bool {
        self.readers.iter().any(|slot| slot.load(Ordering::Relaxed) == owner)
    }

    /// How many slots name a shared holder.
    pub(crate) fn named_readers(&self) -> u64 {
        self.readers.iter().filter(|slot| slot.load(Ordering::Relaxed) != 0).count() as u64
    }

    /// The token an optimistic read starts from, or `None` while the key is
    /// held exclusively (a read now could see a write in progress).
    #[inline]
    pub(crate) fn stamp(&self) -> Option<u64> {
        let token = self.token.load(Ordering::Acquire);
        let word = self.word.load(Ordering::Acquire);
        (word & (EXCLUSIVE | DEAD) == 0).then_some(token)
    }

    /// Whether no exclusive grant has been made since `stamp` returned `token`.
    /// The caller's optimistic reads must come before this call.
    #[inline]
    pub(crate) fn validate(&self, token: u64) -> bool {
        // Pairs with the Release fence every exclusive holder issues after
        // taking its token (`Grant::new`): if our reads saw its writes, these
        // loads see its word or its token.
        fence(Ordering::Acquire);
        let word = self.word.load(Ordering::Relaxed);
        let now = self.token.load(Ordering::Relaxed);
        word & (EXCLUSIVE | DEAD) == 0 && now == token
    }
}
