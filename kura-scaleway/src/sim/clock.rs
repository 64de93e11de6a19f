//! The simulator's clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the simulator's time passes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClockMode {
    /// Only [`super::Simulator::advance`] (and sleeps of its clients) move time.
    Virtual,
    /// Real time multiplied by `speed` (e.g. 60.0: a minute per second), plus
    /// any explicit advance. For demos.
    Real {
        /// Speed factor.
        speed: f64,
    },
}

struct Inner {
    offset: Duration,
    origin: Instant,
}

pub(super) struct SimClockState {
    mode: ClockMode,
    inner: Mutex<Inner>,
}

impl SimClockState {
    pub(super) fn new(mode: ClockMode) -> Self {
        Self {
            mode,
            inner: Mutex::new(Inner {
                offset: Duration::ZERO,
                origin: Instant::now(),
            }),
        }
    }
    pub(super) fn mode(&self) -> ClockMode {
        self.mode
    }
    pub(super) fn now(&self) -> Duration {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match self.mode {
            ClockMode::Virtual => inner.offset,
            ClockMode::Real { speed } => {
                let speed = if speed.is_finite() && speed > 0.0 {
                    speed
                } else {
                    1.0
                };
                let scaled =
                    Duration::try_from_secs_f64(inner.origin.elapsed().as_secs_f64() * speed)
                        .unwrap_or(Duration::MAX);
                inner.offset.saturating_add(scaled)
            }
        }
    }
    pub(super) fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.offset = inner.offset.saturating_add(by);
    }
}

/// Formats simulator time as RFC 3339, counting from 2026-01-01T00:00:00Z.
pub(super) fn rfc3339(t: Duration) -> String {
    let secs = 1_767_225_600u64.saturating_add(t.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        t.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn extreme_speeds_and_advances_do_not_panic() {
        use super::{ClockMode, SimClockState};
        let c = SimClockState::new(ClockMode::Real { speed: 1e300 });
        c.advance(std::time::Duration::MAX);
        assert_eq!(c.now(), std::time::Duration::MAX);
        let _ = super::rfc3339(c.now());
        let c = SimClockState::new(ClockMode::Real { speed: f64::NAN });
        let _ = c.now();
    }

    #[test]
    fn formats_dates() {
        assert_eq!(
            super::rfc3339(std::time::Duration::ZERO),
            "2026-01-01T00:00:00.000000+00:00"
        );
        assert_eq!(
            super::rfc3339(std::time::Duration::from_secs(86_400 * 59 + 3661)),
            "2026-03-01T01:01:01.000000+00:00"
        );
    }
}
