//! Fair shares of the broker: how much one local user may hold, so that no user, allowed or
//! not, keeps root or another allowed user from a token.
//!
//! Users no target allows never get this far: the server refuses them at connect
//! ([`crate::access::Gate`]). For everyone else the broker counts, per UID:
//!
//! - **waiting** connections (accepted, request line not complete yet): at most
//!   [`Limits::waiting_per_user`], each for at most [`Limits::request_timeout`];
//! - **queued** requests (line complete, no worker yet): at most [`Limits::queued_per_user`],
//!   each answered `ERR transient` by the broker's deadline if no worker became free;
//! - **active** requests (a worker thread answers them): at most [`Limits::workers_per_user`] of
//!   [`Limits::workers`], and [`Limits::root_reserve`] of those only for root.
//!
//! Waiting and queued connections are file descriptors in the server's poll loop, not threads;
//! those of all non-root users together are capped by [`Limits::held_total`] (root's only by its
//! own per-user caps). A free worker goes to the queued request of the user with the fewest
//! active ones, the oldest first. So one user's idle or slow connections cost only that user
//! its share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The broker's limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests answered at once (one thread each).
    pub workers: usize,
    /// Of those, how many one user may have.
    pub workers_per_user: usize,
    /// Of those, how many only root may have.
    pub root_reserve: usize,
    /// Connections of one user that have not sent their request line yet.
    pub waiting_per_user: usize,
    /// Complete requests of one user waiting for a worker.
    pub queued_per_user: usize,
    /// Waiting and queued connections of all non-root users together.
    pub held_total: usize,
    /// How long a client may take from connect to the end of its request line.
    pub request_timeout: Duration,
}

impl Default for Limits {
    /// 64 workers (16 per user, 8 for root only), 32 waiting and 64 queued connections per
    /// user, 512 held for non-root users in all, 1 s for the request line. A client sends its
    /// line right after connecting (exim's `readsocket`, `oxnotify token --broker`), so 1 s
    /// is generous; a burst of 20 deliveries of one MTA fits in one user's share.
    fn default() -> Self {
        Limits {
            workers: 64,
            workers_per_user: 16,
            root_reserve: 8,
            waiting_per_user: 32,
            queued_per_user: 64,
            held_total: 512,
            request_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a connection or request was not taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The user has [`Limits::waiting_per_user`] connections without a request line.
    UserWaiting,
    /// The user has [`Limits::queued_per_user`] requests waiting for a worker.
    UserQueued,
    /// Non-root users hold [`Limits::held_total`] connections.
    Total,
}

impl Full {
    /// For the log: what is full.
    pub fn describe(self) -> &'static str {
        match self {
            Full::UserWaiting => "too many connections of this user have not sent a request yet",
            Full::UserQueued => "too many requests of this user are waiting for a worker",
            Full::Total => "the broker holds as many connections of non-root users as it may",
        }
    }
}

/// What one user holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    waiting: usize,
    queued: usize,
    active: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        *self == Held::default()
    }
}

/// The counts behind the decisions: what every user holds.
#[derive(Debug)]
pub struct Shares {
    limits: Limits,
    users: HashMap<u32, Held>,
    /// Waiting + queued of non-root users.
    held_nonroot: usize,
    active: usize,
    active_nonroot: usize,
}

impl Shares {
    /// Nothing held yet.
    pub fn new(limits: Limits) -> Self {
        Shares {
            limits,
            users: HashMap::new(),
            held_nonroot: 0,
            active: 0,
            active_nonroot: 0,
        }
    }

    /// The limits these shares apply.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn held(&self, uid: u32) -> Held {
        self.users.get(&uid).copied().unwrap_or_default()
    }

    fn update(&mut self, uid: u32, f: impl FnOnce(&mut Held)) {
        let mut h = self.held(uid);
        f(&mut h);
        if h.is_empty() {
            self.users.remove(&uid);
        } else {
            self.users.insert(uid, h);
        }
    }

    /// A new connection of `uid` (an admitted user): it waits for its request line now, or
    /// why it may not.
    pub fn connect(&mut self, uid: u32) -> Result<(), Full> {
        if self.held(uid).waiting >= self.limits.waiting_per_user {
            return Err(Full::UserWaiting);
        }
        if uid != 0 {
            if self.held_nonroot >= self.limits.held_total {
                return Err(Full::Total);
            }
            self.held_nonroot += 1;
        }
        self.update(uid, |h| h.waiting += 1);
        Ok(())
    }

    /// The request line of a waiting connection of `uid` is complete: it is queued for a
    /// worker now, or (the user's queue is full) it is gone.
    pub fn request(&mut self, uid: u32) -> Result<(), Full> {
        if self.held(uid).queued >= self.limits.queued_per_user {
            self.drop_waiting(uid);
            return Err(Full::UserQueued);
        }
        self.update(uid, |h| {
            h.waiting = h.waiting.saturating_sub(1);
            h.queued += 1;
        });
        Ok(())
    }

    /// A waiting connection of `uid` is gone (timed out, closed, no request).
    pub fn drop_waiting(&mut self, uid: u32) {
        self.update(uid, |h| h.waiting = h.waiting.saturating_sub(1));
        self.release_nonroot(uid);
    }

    /// A queued request of `uid` is gone (its deadline passed without a free worker).
    pub fn drop_queued(&mut self, uid: u32) {
        self.update(uid, |h| h.queued = h.queued.saturating_sub(1));
        self.release_nonroot(uid);
    }

    fn release_nonroot(&mut self, uid: u32) {
        if uid != 0 {
            self.held_nonroot = self.held_nonroot.saturating_sub(1);
        }
    }

    /// Whether a queued request of `uid` may have a worker now.
    pub fn may_start(&self, uid: u32) -> bool {
        let l = &self.limits;
        self.active < l.workers
            && self.held(uid).active < l.workers_per_user
            && (uid == 0 || self.active_nonroot < l.workers.saturating_sub(l.root_reserve))
    }

    /// Of the queued requests `(key, uid, arrived)`, the one that gets the next worker: of
    /// those that may start, the user with the fewest active requests first, then the oldest.
    pub fn pick<K>(&self, queued: impl IntoIterator<Item = (K, u32, Instant)>) -> Option<K> {
        queued
            .into_iter()
            .filter(|(_, uid, _)| self.may_start(*uid))
            .min_by_key(|(_, uid, arrived)| (self.held(*uid).active, *arrived))
            .map(|(k, _, _)| k)
    }

    /// A queued request of `uid` got a worker.
    pub fn start(&mut self, uid: u32) {
        self.update(uid, |h| {
            h.queued = h.queued.saturating_sub(1);
            h.active += 1;
        });
        self.release_nonroot(uid);
        self.active += 1;
        if uid != 0 {
            self.active_nonroot += 1;
        }
    }

    /// A worker of `uid` is done.
    pub fn finish(&mut self, uid: u32) {
        self.update(uid, |h| h.active = h.active.saturating_sub(1));
        self.active = self.active.saturating_sub(1);
        if uid != 0 {
            self.active_nonroot = self.active_nonroot.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            workers: 6,
            workers_per_user: 2,
            root_reserve: 1,
            waiting_per_user: 3,
            queued_per_user: 2,
            held_total: 5,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_user_waits_only_within_its_share_and_root_past_the_total() {
        let mut s = Shares::new(small());
        for _ in 0..3 {
            assert_eq!(s.connect(1000), Ok(()));
        }
        assert_eq!(s.connect(1000), Err(Full::UserWaiting));
        // another user: what is left of the total
        assert_eq!(s.connect(1001), Ok(()));
        assert_eq!(s.connect(1001), Ok(()));
        assert_eq!(s.connect(1002), Err(Full::Total));
        // root is not counted against the total, only its own share
        for _ in 0..3 {
            assert_eq!(s.connect(0), Ok(()));
        }
        assert_eq!(s.connect(0), Err(Full::UserWaiting));
        // a connection gone frees its place
        s.drop_waiting(1000);
        assert_eq!(s.connect(1002), Ok(()));
    }

    #[test]
    fn queued_requests_are_capped_per_user() {
        let mut s = Shares::new(small());
        for _ in 0..3 {
            s.connect(1000).unwrap();
        }
        assert_eq!(s.request(1000), Ok(()));
        assert_eq!(s.request(1000), Ok(()));
        assert_eq!(s.request(1000), Err(Full::UserQueued));
        // the refused one no longer counts as waiting
        assert_eq!(s.held(1000).waiting, 0);
        assert_eq!(s.held_nonroot, 2);
        s.drop_queued(1000);
        s.drop_queued(1000);
        assert!(s.users.is_empty());
        assert_eq!(s.held_nonroot, 0);
    }

    fn run(s: &mut Shares, uid: u32) {
        s.connect(uid).unwrap();
        s.request(uid).unwrap();
        assert!(s.may_start(uid), "uid {uid} may start");
        s.start(uid);
    }

    #[test]
    fn workers_per_user_and_the_root_reserve() {
        let mut s = Shares::new(small());
        run(&mut s, 1000);
        run(&mut s, 1000);
        assert!(!s.may_start(1000), "a user's share of workers is 2");
        run(&mut s, 1001);
        run(&mut s, 1001);
        run(&mut s, 1002);
        assert!(!s.may_start(1003), "the last worker is root's");
        assert!(s.may_start(0));
        run(&mut s, 0);
        assert!(!s.may_start(0), "all workers busy");
        s.finish(0);
        assert!(s.may_start(0));
        assert!(!s.may_start(1003), "the free worker is root's");
        s.finish(1000);
        assert!(s.may_start(1003));
    }

    #[test]
    fn a_free_worker_goes_to_the_user_with_the_fewest_then_the_oldest() {
        let mut s = Shares::new(small());
        run(&mut s, 1000);
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        // 1000 asked first, but 1001 has no worker yet
        let queued = [("a", 1000, t0), ("b", 1001, later)];
        assert_eq!(s.pick(queued), Some("b"));
        run(&mut s, 1001);
        assert_eq!(s.pick(queued), Some("a"));
        run(&mut s, 1000);
        // 1000 is at its share: 1001 goes first whatever the order
        assert_eq!(s.pick([("a", 1000, t0), ("b", 1001, later)]), Some("b"));
        assert_eq!(s.pick([("a", 1000, t0)]), None);
    }
}
