//! The account's create limits: the rate window (a token bucket, "N in any minute" or strict
//! spacing, as configured), Replicate's own minute, announced pauses and 429 storms.

use std::cmp::Reverse;
use std::time::Duration;

use tokio::time::Instant;

use super::{Account, Refusal};
use crate::config::{RateWindow, SimConfig};

impl Account {
    /// Counts a create that arrived inside an announced pause.
    pub(crate) fn note_create_arrived(&mut self, now: Instant) {
        if self.announced_pause_until.is_some_and(|until| now < until) {
            self.stats.creates_inside_pause += 1;
        }
    }

    /// A `Retry-After` was sent: no create should arrive before `until`.
    pub(crate) fn announce_pause(&mut self, until: Instant) {
        self.announced_pause_until = Some(self.announced_pause_until.map_or(until, |u| u.max(until)));
    }

    /// Checks the limits for a create at `now`; takes a rate slot when it passes.
    pub(crate) fn admit(&mut self, config: &SimConfig, now: Instant, price: i64) -> Result<(), Refusal> {
        let scale = config.time_scale.max(1e-6);
        if let Some(until) = self.storm_until {
            if now < until {
                return Err(Refusal::RateLimited {
                    retry_after: until - now,
                    detail: "Too many requests",
                });
            }
            self.storm_until = None;
        }
        if let Some(max) = config.max_concurrent {
            if self.in_flight >= u64::from(max) {
                let next = self
                    .pending
                    .peek()
                    .map_or(Duration::from_secs(1), |Reverse((at, _))| {
                        at.saturating_duration_since(now)
                    });
                return Err(Refusal::RateLimited {
                    retry_after: next,
                    detail: "Too many concurrent generations; wait for one to finish",
                });
            }
        }
        if let Some(per_minute) = config.creates_per_minute {
            let window = Duration::from_secs(60).mul_f64(scale);
            let n = f64::from(per_minute);
            match config.rate_window {
                RateWindow::Bucket => {
                    let (tokens, last) = self.bucket;
                    let refill = now.saturating_duration_since(last).as_secs_f64() * n / window.as_secs_f64();
                    let tokens = (tokens + refill).min(n);
                    if tokens < 1.0 {
                        self.bucket = (tokens, now);
                        let wait = Duration::from_secs_f64((1.0 - tokens) * window.as_secs_f64() / n);
                        return Err(Refusal::RateLimited {
                            retry_after: wait,
                            detail: "Too many requests",
                        });
                    }
                    self.bucket = (tokens - 1.0, now);
                }
                RateWindow::Sliding => {
                    while self
                        .window
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
                    {
                        self.window.pop_front();
                    }
                    if self.window.len() >= per_minute as usize {
                        let oldest = self.window.front().copied().unwrap_or(now);
                        return Err(Refusal::RateLimited {
                            retry_after: (oldest + window).saturating_duration_since(now),
                            detail: "Too many requests",
                        });
                    }
                    self.window.push_back(now);
                }
                RateWindow::Spacing => {
                    let spacing = window.div_f64(n);
                    if let Some(last) = self.last_admitted {
                        let next = last + spacing;
                        if now < next {
                            return Err(Refusal::RateLimited {
                                retry_after: next - now,
                                detail: "Too many requests",
                            });
                        }
                    }
                    self.last_admitted = Some(now);
                }
            }
        }
        if self.balance < price {
            return Err(Refusal::NoCredit);
        }
        Ok(())
    }

    /// Checks Replicate's limits for a create at `now` (a storm, the sliding window of
    /// [`ReplicateSim::creates_per_minute`](crate::ReplicateSim), credit); takes a slot when it
    /// passes. Luma's concurrency and per-minute limits are not Replicate's.
    pub(crate) fn admit_replicate(
        &mut self,
        config: &SimConfig,
        now: Instant,
        price: i64,
    ) -> Result<(), Refusal> {
        if let Some(until) = self.storm_until.filter(|until| now < *until) {
            return Err(Refusal::RateLimited {
                retry_after: until - now,
                detail: "Request was throttled.",
            });
        }
        if let Some(per_minute) = config.replicate.creates_per_minute {
            let window = Duration::from_secs(60).mul_f64(config.time_scale.max(1e-6));
            while self
                .replicate_window
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                self.replicate_window.pop_front();
            }
            if self.replicate_window.len() >= per_minute as usize {
                let oldest = self.replicate_window.front().copied().unwrap_or(now);
                return Err(Refusal::RateLimited {
                    retry_after: (oldest + window).saturating_duration_since(now),
                    detail: "Request was throttled.",
                });
            }
        }
        if self.balance < price {
            return Err(Refusal::NoCredit);
        }
        self.replicate_window.push_back(now);
        Ok(())
    }

    /// Starts a storm of 429s.
    pub(crate) fn start_storm(&mut self, now: Instant, length: Duration) {
        self.storm_until = Some(now + length);
    }
}
