//! A rate limiter per key (user, API key, model), with bounded memory.
//!
//! [`KeyedRateLimiter`] creates a token bucket for a key on first use, from one shared
//! [`RateLimitConfig`], and behaves for each key exactly like a
//! [`RateLimiter`](crate::rate_limit::RateLimiter) (GCRA, FIFO reservations, settle, server
//! feedback). Keys live in 16 shards, each a `std::sync::Mutex<HashMap>`.
//!
//! **Memory stays bounded.** A key whose bucket is full again carries no state worth keeping, so
//! it is *idle* and may be dropped: a key used again later starts from a full bucket, which is
//! exactly where it was. Idle keys are swept from a shard every `sweep_every` operations on that
//! shard, and on demand by [`KeyedRateLimiter::evict_idle`]. At most `max_keys` keys are held:
//! when a new key arrives at the limit, idle keys are evicted first; if none is idle, the
//! [`WhenFull`] policy decides — evict the least recently used key (the default: its caller may
//! get a fresh burst, but no new user is locked out) or refuse the new key with
//! [`RateLimitError::TooManyKeys`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::event::{Event, Observers};
use crate::rate_limit::{
    Clock, Gcra, RateLimitConfig, RateLimitError, TimeBase, nanos, read_observers, set_observers,
};

const SHARDS: usize = 16;

/// What a [`KeyedRateLimiter`] does with a new key when it holds `max_keys` keys and none is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Evict the key used least recently (its next request starts from a full bucket).
    #[default]
    EvictLeastRecentlyUsed,
    /// Refuse the new key with [`RateLimitError::TooManyKeys`].
    Refuse,
}

/// Memory bounds of a [`KeyedRateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedConfig {
    /// The most keys held at once.
    pub max_keys: usize,
    /// Idle keys of a shard are swept after this many operations on that shard.
    pub sweep_every: u32,
    /// What to do with a new key at `max_keys` when no key is idle.
    pub when_full: WhenFull,
}

impl Default for KeyedConfig {
    /// 100 000 keys, sweep every 1024 operations per shard, evict the least recently used.
    fn default() -> Self {
        KeyedConfig {
            max_keys: 100_000,
            sweep_every: 1024,
            when_full: WhenFull::EvictLeastRecentlyUsed,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// GCRA theoretical arrival time, nanoseconds since the limiter's origin.
    tat: u64,
    /// Last use, nanoseconds since the limiter's origin.
    last_used: u64,
}

#[derive(Debug)]
struct Shard<K> {
    map: HashMap<K, Entry>,
    ops: u32,
}

#[derive(Debug)]
struct Inner<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    len: AtomicUsize,
    gcra: Gcra,
    max_wait: Option<Duration>,
    keyed: KeyedConfig,
    time: TimeBase,
    name: Arc<str>,
    observers: RwLock<Observers>,
}

/// One token bucket per key, created on demand; cheap to clone, clones share the buckets.
///
/// ```
/// use quorum_resilience::keyed::{KeyedConfig, KeyedRateLimiter};
/// use quorum_resilience::rate_limit::RateLimitConfig;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let per_user = KeyedRateLimiter::new(
///     "rpm-per-user",
///     RateLimitConfig::per_minute(2),
///     KeyedConfig::default(),
/// )?;
/// per_user.try_acquire(&"alice", 2)?;
/// assert!(per_user.try_acquire(&"alice", 1).is_err());
/// per_user.try_acquire(&"bob", 1)?; // bob has his own bucket
/// assert_eq!(per_user.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fast multiplicative hash, used only to pick a shard (the maps themselves use SipHash).
#[derive(Default)]
struct ShardHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for ShardHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct ShardHash;

impl BuildHasher for ShardHash {
    type Hasher = ShardHasher;
    fn build_hasher(&self) -> ShardHasher {
        ShardHasher::default()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// Builds a keyed limiter named `name` whose buckets all follow `config`, observing nothing.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidConfig`] naming the field for a bad `config` (as
    /// [`RateLimiter::new`](crate::rate_limit::RateLimiter::new)), a `max_keys` or `sweep_every`
    /// of 0.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: RateLimitConfig,
        keyed: KeyedConfig,
    ) -> Result<Self, RateLimitError> {
        Self::with_clock(name, config, keyed, Clock::tokio())
    }

    /// Like [`KeyedRateLimiter::new`], reading the time from `clock`.
    ///
    /// # Errors
    /// As [`KeyedRateLimiter::new`].
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        config: RateLimitConfig,
        keyed: KeyedConfig,
        clock: Clock,
    ) -> Result<Self, RateLimitError> {
        let gcra = config.gcra()?;
        if keyed.max_keys == 0 {
            return Err(RateLimitError::InvalidConfig {
                field: "max_keys",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if keyed.sweep_every == 0 {
            return Err(RateLimitError::InvalidConfig {
                field: "sweep_every",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    ops: 0,
                })
            })
            .collect();
        Ok(KeyedRateLimiter {
            inner: Arc::new(Inner {
                shards,
                len: AtomicUsize::new(0),
                gcra,
                max_wait: config.max_wait,
                keyed,
                time: clock.start(),
                name: name.into(),
                observers: RwLock::new(Observers::default()),
            }),
        })
    }

    /// Reports events to `observers` (for this limiter and all its clones).
    #[must_use]
    pub fn with_observers(self, observers: Observers) -> Self {
        set_observers(&self.inner.observers, observers);
        self
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens available to `key` right now (a full bucket for a key not held).
    pub fn available(&self, key: &K) -> u64 {
        let inner = &*self.inner;
        let now = inner.now();
        let shard = lock(inner.shard(key));
        match shard.map.get(key) {
            Some(e) => inner.gcra.available(e.tat, now),
            None => inner.gcra.capacity,
        }
    }

    /// Takes `n` tokens from `key`'s bucket now, or fails without waiting.
    ///
    /// # Errors
    /// As [`RateLimiter::try_acquire`](crate::rate_limit::RateLimiter::try_acquire), plus
    /// [`RateLimitError::TooManyKeys`] for a new key when full and configured to refuse.
    #[inline]
    pub fn try_acquire(&self, key: &K, n: u64) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let gcra = inner.gcra;
        if n > gcra.capacity {
            return Err(inner.exceeds(n));
        }
        let now = inner.now();
        let admitted = inner.with_entry(key, now, |e| match gcra.admit(e.tat, now, n) {
            Ok(new) => {
                e.tat = new;
                Ok(())
            }
            Err(wait) => Err(wait),
        })?;
        admitted.map_err(|wait| {
            inner.limited(n);
            RateLimitError::Limited {
                requested: n,
                retry_after: Duration::from_nanos(wait),
            }
        })
    }

    /// Waits for `n` tokens from `key`'s bucket, first come first served, up to the configured
    /// `max_wait`. Dropping the future before it completes returns the reservation.
    ///
    /// # Errors
    /// As [`RateLimiter::acquire`](crate::rate_limit::RateLimiter::acquire), plus
    /// [`RateLimitError::TooManyKeys`] for a new key when full and configured to refuse.
    pub async fn acquire(&self, key: &K, n: u64) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let gcra = inner.gcra;
        if n > gcra.capacity {
            return Err(inner.exceeds(n));
        }
        let now = inner.now();
        let max = inner.max_wait.map(nanos);
        let reserved = inner.with_entry(key, now, |e| {
            let (new, wait) = gcra.reserve(e.tat, now, n);
            match max {
                Some(max) if wait > max => Err(wait),
                _ => {
                    e.tat = new;
                    Ok(wait)
                }
            }
        })?;
        let wait = match reserved {
            Ok(wait) => wait,
            Err(wait) => {
                inner.limited(n);
                return Err(RateLimitError::WaitTooLong {
                    requested: n,
                    wait: Duration::from_nanos(wait),
                    max_wait: inner.max_wait.unwrap_or_default(),
                });
            }
        };
        if wait == 0 {
            return Ok(());
        }
        inner.limited(n);
        let mut reservation = Reservation {
            inner,
            key,
            tokens: n,
            armed: true,
        };
        tokio::time::sleep(Duration::from_nanos(wait)).await;
        reservation.armed = false;
        Ok(())
    }

    /// Corrects an earlier acquisition for `key` of `reserved` tokens once `actual` usage is
    /// known: refunds the difference or charges it, possibly into debt.
    ///
    /// # Errors
    /// [`RateLimitError::TooManyKeys`] when charging a key that is no longer held, the limiter is
    /// full and configured to refuse.
    pub fn settle(&self, key: &K, reserved: u64, actual: u64) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let gcra = inner.gcra;
        if actual < reserved {
            inner.refund(key, reserved - actual);
            Ok(())
        } else if actual > reserved {
            let now = inner.now();
            inner.with_entry(key, now, |e| {
                e.tat = gcra.charge(e.tat, now, actual - reserved)
            })
        } else {
            Ok(())
        }
    }

    /// Lowers `key`'s bucket to what the server says remains; see
    /// [`RateLimiter::observe_remaining`](crate::rate_limit::RateLimiter::observe_remaining).
    ///
    /// # Errors
    /// [`RateLimitError::TooManyKeys`] for a new key when full and configured to refuse.
    pub fn observe_remaining(
        &self,
        key: &K,
        remaining: u64,
        reset_after: Option<Duration>,
    ) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let now = inner.now();
        let target = inner
            .gcra
            .remaining_tat(now, remaining, reset_after.map(nanos));
        inner.with_entry(key, now, |e| e.tat = e.tat.max(target))
    }

    /// Drops every idle key (bucket full again); returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.now();
        inner
            .shards
            .iter()
            .map(|s| inner.sweep(&mut lock(s), now))
            .sum()
    }
}

impl<K: Hash + Eq + Clone> Inner<K> {
    #[inline]
    fn now(&self) -> u64 {
        self.time.now()
    }

    #[inline]
    fn shard(&self, key: &K) -> &Mutex<Shard<K>> {
        let hash = ShardHash.hash_one(key);
        &self.shards[(hash >> 60) as usize % SHARDS]
    }

    fn limited(&self, tokens: u64) {
        read_observers(&self.observers).emit(Event::RateLimited {
            name: &self.name,
            tokens,
        });
    }

    fn exceeds(&self, requested: u64) -> RateLimitError {
        self.limited(requested);
        RateLimitError::ExceedsCapacity {
            requested,
            capacity: self.gcra.capacity,
        }
    }

    /// Removes the idle keys of a locked shard.
    fn sweep(&self, shard: &mut Shard<K>, now: u64) -> usize {
        let before = shard.map.len();
        shard.map.retain(|_, e| !self.gcra.is_idle(e.tat, now));
        shard.ops = 0;
        let removed = before - shard.map.len();
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Claims room for one more key, if under `max_keys`.
    fn claim_slot(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |len| {
                (len < self.keyed.max_keys).then_some(len + 1)
            })
            .is_ok()
    }

    /// Runs `f` on `key`'s entry, creating it (full bucket) if needed and room can be made.
    #[inline]
    fn with_entry<R>(
        &self,
        key: &K,
        now: u64,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, RateLimitError> {
        let shard = self.shard(key);
        // Twice: after making room, another thread may have taken it.
        for _ in 0..3 {
            {
                let mut guard = lock(shard);
                let shard = &mut *guard;
                shard.ops += 1;
                if shard.ops >= self.keyed.sweep_every {
                    self.sweep(shard, now);
                }
                if let Some(entry) = shard.map.get_mut(key) {
                    entry.last_used = now;
                    return Ok(f(entry));
                }
                if self.claim_slot() {
                    let entry = shard.map.entry(key.clone()).or_insert(Entry {
                        tat: 0,
                        last_used: now,
                    });
                    return Ok(f(entry));
                }
            }
            // Full: make room without holding the shard lock (no two shard locks are ever held).
            let evicted: usize = self
                .shards
                .iter()
                .map(|s| self.sweep(&mut lock(s), now))
                .sum();
            if evicted == 0 {
                match self.keyed.when_full {
                    WhenFull::Refuse => break,
                    WhenFull::EvictLeastRecentlyUsed => self.evict_lru(),
                }
            }
        }
        Err(RateLimitError::TooManyKeys {
            max_keys: self.keyed.max_keys,
        })
    }

    /// Evicts the least recently used key (a scan: only when full and nothing is idle).
    fn evict_lru(&self) {
        let mut oldest: Option<(usize, K, u64)> = None;
        for (i, shard) in self.shards.iter().enumerate() {
            let shard = lock(shard);
            for (k, e) in &shard.map {
                if oldest.as_ref().is_none_or(|(_, _, t)| e.last_used < *t) {
                    oldest = Some((i, k.clone(), e.last_used));
                }
            }
        }
        if let Some((i, key, last_used)) = oldest {
            let mut shard = lock(&self.shards[i]);
            if shard
                .map
                .get(&key)
                .is_some_and(|e| e.last_used == last_used)
            {
                shard.map.remove(&key);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn refund(&self, key: &K, n: u64) {
        let mut shard = lock(self.shard(key));
        if let Some(e) = shard.map.get_mut(key) {
            e.tat = self.gcra.refund(e.tat, n);
        }
    }
}

/// A pending keyed reservation; returns its tokens if dropped while armed.
struct Reservation<'a, K: Hash + Eq + Clone> {
    inner: &'a Inner<K>,
    key: &'a K,
    tokens: u64,
    armed: bool,
}

impl<K: Hash + Eq + Clone> Drop for Reservation<'_, K> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.refund(self.key, self.tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hash_spreads_keys() {
        let mut used = [0usize; SHARDS];
        for i in 0..1600 {
            let h = ShardHash.hash_one(format!("user-{i}"));
            used[(h >> 60) as usize % SHARDS] += 1;
        }
        assert!(used.iter().all(|&n| n > 40), "{used:?}");
    }

    #[test]
    fn bad_keyed_config_is_rejected() {
        let err = KeyedRateLimiter::<u32>::new(
            "k",
            RateLimitConfig::per_second(1),
            KeyedConfig {
                max_keys: 0,
                ..KeyedConfig::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid rate limit config: max_keys (0) must be at least 1"
        );
    }
}
