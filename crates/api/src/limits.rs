//! Limits on what one client can hold or try: concurrent log followers per
//! token, failed authentication per client address, and how long a request
//! body may take to arrive. The counters live in memory, per process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use uuid::Uuid;

/// The configurable limits (`IF_HTTP_*` in the binary).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest time a request body may take to arrive in full (408 after).
    pub body_read_timeout: Duration,
    /// Concurrent `?follow=true` log streams per token (429 beyond).
    pub log_followers_per_token: usize,
    /// Failed token checks from one address within `auth_failure_window`
    /// after which its requests get 429 without their token being checked.
    pub auth_failures: u32,
    pub auth_failure_window: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            body_read_timeout: Duration::from_secs(30),
            log_followers_per_token: 4,
            auth_failures: 20,
            auth_failure_window: Duration::from_secs(60),
        }
    }
}

/// The deadline for reading a request body, set on every request by the
/// router and read by the body extractor.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// Open log follow streams per token.
#[derive(Clone, Default)]
pub struct FollowerSlots(Arc<Mutex<HashMap<Uuid, usize>>>);

/// One open follow stream; dropping it (stream ended, client gone) frees it.
pub struct FollowerSlot {
    slots: FollowerSlots,
    token: Uuid,
}

impl FollowerSlots {
    /// A slot for `token`, unless it already holds `max`.
    pub fn acquire(&self, token: Uuid, max: usize) -> Option<FollowerSlot> {
        let mut open = self.0.lock().unwrap();
        let count = open.entry(token).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(FollowerSlot {
            slots: self.clone(),
            token,
        })
    }

    /// Open streams of `token` (for tests and diagnostics).
    pub fn open(&self, token: Uuid) -> usize {
        self.0.lock().unwrap().get(&token).copied().unwrap_or(0)
    }
}

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap();
        if let Some(count) = open.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// Addresses tracked at most; beyond, the oldest window is forgotten, so
/// memory stays bounded whatever the number of addresses.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

struct Failures {
    count: u32,
    since: Instant,
}

/// Failed authentication per client address, in fixed windows.
#[derive(Clone, Default)]
pub struct AuthThrottle(Arc<Mutex<HashMap<IpAddr, Failures>>>);

impl AuthThrottle {
    /// `Err(retry_after)` while `ip` has used up its failures in the window.
    pub fn check(&self, ip: IpAddr, limits: &HttpLimits) -> Result<(), Duration> {
        let tracked = self.0.lock().unwrap();
        match tracked.get(&key(ip)) {
            Some(f) if f.count >= limits.auth_failures => {
                let left = limits.auth_failure_window.saturating_sub(f.since.elapsed());
                if left.is_zero() { Ok(()) } else { Err(left) }
            }
            _ => Ok(()),
        }
    }

    /// Count one failed token check from `ip`.
    pub fn failed(&self, ip: IpAddr, limits: &HttpLimits) {
        let ip = key(ip);
        let now = Instant::now();
        let window = limits.auth_failure_window;
        let mut tracked = self.0.lock().unwrap();
        if !tracked.contains_key(&ip) && tracked.len() >= MAX_TRACKED_ADDRESSES {
            tracked.retain(|_, f| now.duration_since(f.since) < window);
            if tracked.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = tracked.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k)
            {
                tracked.remove(&oldest);
            }
        }
        let entry = tracked.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.duration_since(entry.since) >= window {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    /// Addresses currently tracked (for tests).
    pub fn tracked(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// What is counted: an IPv4 address, or an IPv6 address's /64 (one host
/// commonly has a whole /64 to choose from).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The TCP peer's address, when the server recorded it (`ConnectInfo`).
/// Behind a reverse proxy this is the proxy: forwarded headers are not
/// trusted, so a client cannot choose its own address.
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures: u32, window_ms: u64) -> HttpLimits {
        HttpLimits {
            auth_failures: failures,
            auth_failure_window: Duration::from_millis(window_ms),
            ..HttpLimits::default()
        }
    }

    #[test]
    fn follower_slots_are_counted_per_token_and_freed_on_drop() {
        let slots = FollowerSlots::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = slots.acquire(a, 2).unwrap();
        let second = slots.acquire(a, 2).unwrap();
        assert!(slots.acquire(a, 2).is_none());
        let other = slots.acquire(b, 2).unwrap();
        drop(first);
        assert_eq!(slots.open(a), 1);
        let again = slots.acquire(a, 2).unwrap();
        drop((second, again, other));
        assert!(slots.0.lock().unwrap().is_empty());
    }

    #[test]
    fn an_address_is_throttled_after_its_failures_until_the_window_ends() {
        let throttle = AuthThrottle::default();
        let limits = limits(3, 200);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.check(ip, &limits).is_ok());
            throttle.failed(ip, &limits);
        }
        let retry = throttle.check(ip, &limits).unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(200));
        assert!(throttle.check(other, &limits).is_ok());
        std::thread::sleep(Duration::from_millis(220));
        assert!(throttle.check(ip, &limits).is_ok());
        throttle.failed(ip, &limits);
        assert!(
            throttle.check(ip, &limits).is_ok(),
            "a new window starts at 1"
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let throttle = AuthThrottle::default();
        let limits = limits(2, 60_000);
        throttle.failed("2001:db8::1".parse().unwrap(), &limits);
        throttle.failed("2001:db8::2:3".parse().unwrap(), &limits);
        assert!(
            throttle
                .check("2001:db8::ffff".parse().unwrap(), &limits)
                .is_err()
        );
        assert!(
            throttle
                .check("2001:db8:0:1::1".parse().unwrap(), &limits)
                .is_ok()
        );
    }

    #[test]
    fn tracked_addresses_stay_bounded() {
        let throttle = AuthThrottle::default();
        let limits = limits(1, 60_000);
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            throttle.failed(IpAddr::from(i.to_be_bytes()), &limits);
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED_ADDRESSES);
    }
}
