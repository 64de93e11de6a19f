//! Hybrid logical clocks and versions.
//!
//! An [`Hlc`] is a 64-bit timestamp: the upper 48 bits are physical milliseconds since the
//! Unix epoch, the lower 16 bits a logical counter. A [`Version`] pairs it with the
//! [`NodeId`] that issued it; versions are totally ordered by `(hlc, node)`, which is the
//! last-writer-wins order.
//!
//! **Bounded drift rule.** A timestamp received from a peer whose physical part is more than
//! `max_drift` ahead of the local physical clock is rejected with [`Error::ClockSkew`]: it is
//! neither applied nor allowed to advance the local clock. Timestamps within the bound advance
//! the local clock, so the next local write is ordered after them. Hence a node whose clock
//! runs an hour fast cannot push other nodes' clocks (and so cannot make their writes lose)
//! by more than `max_drift`; its own writes are refused by peers until real time catches up.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::types::NodeId;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical clock timestamp: `physical_ms << 16 | logical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Builds a timestamp from its parts (`physical_ms` is truncated to 48 bits).
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Self((physical_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// Physical milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter.
    pub fn logical(self) -> u16 {
        // Masked to 16 bits, so the cast is lossless.
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// The version of a record: LWW order is `(hlc, node)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// When the write happened.
    pub hlc: Hlc,
    /// Which node accepted it (tie-break).
    pub node: NodeId,
}

impl Version {
    /// Builds a version.
    pub fn new(hlc: Hlc, node: NodeId) -> Self {
        Self { hlc, node }
    }
}

/// A physical clock. Injected so tests can simulate skew.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }

    /// Sets the reading.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the reading forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A hybrid logical clock over a physical [`Clock`], with the bounded drift rule.
#[derive(Debug)]
pub struct HlcClock {
    physical: Arc<dyn Clock>,
    last: Mutex<Hlc>,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock that starts after `floor` (e.g. the highest timestamp persisted).
    pub fn new(physical: Arc<dyn Clock>, max_drift_ms: u64, floor: Hlc) -> Self {
        Self {
            physical,
            last: Mutex::new(floor),
            max_drift_ms,
        }
    }

    /// The configured maximum drift.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// The physical clock reading.
    pub fn physical_ms(&self) -> u64 {
        self.physical.now_ms()
    }

    /// A new timestamp, strictly greater than every timestamp issued or observed before.
    pub fn now(&self) -> Hlc {
        let pt = Hlc::new(self.physical.now_ms(), 0);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = if pt > *last {
            pt
        } else {
            Hlc(last.0.saturating_add(1))
        };
        *last = next;
        next
    }

    /// Moves the clock past `floor` without the drift check (recovered local history).
    pub(crate) fn raise_floor(&self, floor: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if floor > *last {
            *last = floor;
        }
    }

    /// Checks a remote timestamp against the drift rule; if accepted, the clock moves past it.
    pub fn observe(&self, remote: Hlc) -> Result<(), Error> {
        let local_ms = self.physical.now_ms();
        if remote.physical_ms() > local_ms.saturating_add(self.max_drift_ms) {
            return Err(Error::ClockSkew {
                remote_ms: remote.physical_ms(),
                local_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if remote > *last {
            *last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_physical_clock_goes_back() {
        let pc = Arc::new(ManualClock::new(1_000));
        let c = HlcClock::new(pc.clone(), 60_000, Hlc::default());
        let a = c.now();
        pc.set(500);
        let b = c.now();
        assert!(b > a);
        assert_eq!(b.physical_ms(), 1_000);
        assert_eq!(b.logical(), 1);
        pc.set(2_000);
        assert_eq!(c.now(), Hlc::new(2_000, 0));
    }

    #[test]
    fn drift_rule_rejects_far_future_and_accepts_within_bound() {
        let pc = Arc::new(ManualClock::new(10_000_000));
        let c = HlcClock::new(pc.clone(), 60_000, Hlc::default());
        let hour_ahead = Hlc::new(10_000_000 + 3_600_000, 0);
        assert!(matches!(
            c.observe(hour_ahead),
            Err(Error::ClockSkew {
                max_drift_ms: 60_000,
                ..
            })
        ));
        // Rejected timestamps do not move the clock.
        assert!(c.now() < hour_ahead);
        let near = Hlc::new(10_000_000 + 30_000, 7);
        c.observe(near).unwrap();
        assert!(c.now() > near);
    }
}
