//! Logins waiting for their token to be verified.
//!
//! A signature check costs tens of microseconds (RS256 more): a storm of
//! token HELLOs verified as they arrive would stall every delivery of the
//! iteration behind them. The loop pushes each token HELLO here and
//! verifies at most `per_iteration` per iteration, and stops earlier once
//! the iteration's verifications took `time_per_iteration` (RS256 and
//! EdDSA cost several times HS256, so a count alone lets their storms
//! stretch an iteration); the rest wait in arrival order. So a storm slows
//! logins, not delivery.
//!
//! Pure data: entries name a session by its `mio::Token` and the session
//! id the chat gave it, because a token is reused after its session ends;
//! an entry whose session has gone is skipped without using the budget.

use std::collections::VecDeque;

use mio::Token;

/// Default logins verified per loop iteration.
pub const DEFAULT_PER_ITERATION: usize = 64;
/// Default most logins waiting at once.
pub const DEFAULT_CAPACITY: usize = 16_384;
/// Default verification time per iteration (µs) after which the rest wait.
pub const DEFAULT_TIME_PER_ITERATION_US: u64 = 2_000;

/// One waiting login.
#[derive(Clone, PartialEq, Eq)]
pub struct Pending<T> {
    /// The session's token in the `Poll`.
    pub token: Token,
    /// The chat's id for that session (tokens are reused).
    pub session_id: u64,
    /// What the verification needs (the token text, the HELLO's fields).
    pub item: T,
}

// The item holds a token: never shown.
impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({:?}, session {})", self.token, self.session_id)
    }
}

/// The queue is full: the caller refuses the login (it is not silently
/// dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A bounded FIFO with a per-iteration budget.
#[derive(Debug)]
pub struct LoginQueue<T> {
    waiting: VecDeque<Pending<T>>,
    capacity: usize,
    per_iteration: usize,
    budget: usize,
    /// Verification time allowed per iteration (ns); 0: count only.
    time_per_iteration_ns: u64,
    spent_ns: u64,
}

impl<T> LoginQueue<T> {
    /// A queue holding at most `capacity`, releasing `per_iteration` per
    /// iteration (both at least 1).
    pub fn new(capacity: usize, per_iteration: usize) -> LoginQueue<T> {
        let per_iteration = per_iteration.max(1);
        LoginQueue {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            per_iteration,
            budget: per_iteration,
            time_per_iteration_ns: DEFAULT_TIME_PER_ITERATION_US * 1000,
            spent_ns: 0,
        }
    }

    /// Appends a login; `Err` when `capacity` are waiting.
    pub fn push(&mut self, token: Token, session_id: u64, item: T) -> Result<(), QueueFull> {
        if self.waiting.len() >= self.capacity {
            return Err(QueueFull);
        }
        self.waiting.push_back(Pending {
            token,
            session_id,
            item,
        });
        Ok(())
    }

    /// Starts an iteration: the budget is whole again.
    pub fn begin_iteration(&mut self) {
        self.budget = self.per_iteration;
        self.spent_ns = 0;
    }

    /// Counts `ns` of verification against this iteration's time budget.
    /// The check that crosses it finishes (a verification is never cut);
    /// the next [`LoginQueue::pop`] of the iteration says `None`.
    pub fn charge(&mut self, ns: u64) {
        self.spent_ns = self.spent_ns.saturating_add(ns);
    }

    /// The next login to verify this iteration, oldest first; `None` when
    /// the budget is spent or nothing waits. Entries for which `alive`
    /// says false (the session closed, or its token now names another
    /// session) are dropped on the way and cost nothing.
    pub fn pop(&mut self, mut alive: impl FnMut(Token, u64) -> bool) -> Option<Pending<T>> {
        if self.budget == 0
            || (self.time_per_iteration_ns > 0 && self.spent_ns >= self.time_per_iteration_ns)
        {
            return None;
        }
        while let Some(p) = self.waiting.pop_front() {
            if alive(p.token, p.session_id) {
                self.budget -= 1;
                return Some(p);
            }
        }
        None
    }

    /// Whether logins wait beyond this iteration's budget (the loop then
    /// polls without sleeping, as for any other pending work).
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Changes the per-iteration budget (a live option).
    pub fn set_per_iteration(&mut self, n: usize) {
        self.per_iteration = n.max(1);
    }

    /// Changes the verification time allowed per iteration (a live
    /// option; 0: only the count bounds an iteration).
    pub fn set_time_per_iteration(&mut self, d: std::time::Duration) {
        self.time_per_iteration_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    }

    /// Changes how many may wait (a live option). Logins already waiting
    /// above a lowered bound stay; new ones are refused until it holds.
    pub fn set_capacity(&mut self, n: usize) {
        self.capacity = n.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_per_iteration_in_arrival_order() {
        let mut q = LoginQueue::new(10, 2);
        for i in 0..5 {
            q.push(Token(i), i as u64, i).unwrap();
        }
        let all = |_: Token, _: u64| true;
        q.begin_iteration();
        let first: Vec<_> = std::iter::from_fn(|| q.pop(all)).map(|p| p.item).collect();
        assert_eq!(first, [0, 1]);
        assert!(q.has_work());
        q.begin_iteration();
        // Session 2 closed and token 3 now names session 99: both skipped free.
        let got: Vec<_> = std::iter::from_fn(|| q.pop(|t, id| t.0 != 2 && id != 3))
            .map(|p| p.item)
            .collect();
        assert_eq!(got, [4]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_time_budget_ends_an_iteration_early() {
        let mut q = LoginQueue::new(10, 8);
        q.set_time_per_iteration(std::time::Duration::from_micros(100));
        for i in 0..6 {
            q.push(Token(i), i as u64, i).unwrap();
        }
        let all = |_: Token, _: u64| true;
        q.begin_iteration();
        let mut got = Vec::new();
        while let Some(p) = q.pop(all) {
            got.push(p.item);
            // 40 µs each: the third crosses 100 µs and still finishes.
            q.charge(40_000);
        }
        assert_eq!(got, [0, 1, 2]);
        q.begin_iteration();
        assert_eq!(q.pop(all).map(|p| p.item), Some(3));
        // Count only: the time spent no longer ends the iteration.
        q.set_time_per_iteration(std::time::Duration::ZERO);
        q.charge(u64::MAX);
        assert_eq!(q.pop(all).map(|p| p.item), Some(4));
    }

    #[test]
    fn a_lowered_capacity_refuses_new_ones_and_keeps_the_waiting() {
        let mut q = LoginQueue::new(4, 1);
        for i in 0..3 {
            q.push(Token(i), i as u64, i).unwrap();
        }
        q.set_capacity(2);
        assert_eq!(q.push(Token(9), 9, 9), Err(QueueFull));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn full_is_refused_not_dropped() {
        let mut q = LoginQueue::new(2, 1);
        q.push(Token(1), 1, "a").unwrap();
        q.push(Token(2), 2, "b").unwrap();
        assert_eq!(q.push(Token(3), 3, "c"), Err(QueueFull));
        assert_eq!(q.len(), 2);
        assert_eq!(
            format!("{:?}", q.pop(|_, _| true).unwrap()),
            "Pending(Token(1), session 1)"
        );
    }
}
