//! Fair share per account inside a lane: which of the jobs in hand starts next.
//!
//! A deficit round-robin with every job costing one: accounts with jobs waiting take turns, and
//! a job starts only while the lane has a free slot. An account already holding its cap of
//! slots is passed over while an account under its cap has a job waiting, so a burst from one
//! account that fills the lane is overtaken by the next account's first job as soon as a slot
//! frees. When every waiting account is at its cap the slot still goes to the next in turn:
//! no slot stays idle while a job waits. Within one account, jobs start in the order they came.
//!
//! Pure: intake keeps one per lane and session, and decides nothing else with it.

use std::collections::{HashMap, VecDeque};

/// The jobs of one lane in hand, waiting or running, by account.
pub struct FairQueue<T> {
    max_in_flight: u32,
    account_cap: u32,
    running: u32,
    accounts: HashMap<Box<str>, Account<T>>,
    /// Accounts with jobs waiting, in turn order; each appears once.
    turns: VecDeque<Box<str>>,
    waiting: usize,
}

struct Account<T> {
    waiting: VecDeque<T>,
    running: u32,
}

impl<T> FairQueue<T> {
    pub fn new(max_in_flight: u32, account_cap: u32) -> FairQueue<T> {
        FairQueue {
            max_in_flight: max_in_flight.max(1),
            account_cap: account_cap.max(1),
            running: 0,
            accounts: HashMap::new(),
            turns: VecDeque::new(),
            waiting: 0,
        }
    }

    /// A job of `account` arrived.
    pub fn push(&mut self, account: &str, job: T) {
        let entry = self.accounts.entry(account.into()).or_insert(Account {
            waiting: VecDeque::new(),
            running: 0,
        });
        if entry.waiting.is_empty() {
            self.turns.push_back(account.into());
        }
        entry.waiting.push_back(job);
        self.waiting += 1;
    }

    /// The next job to start, if a slot is free; it counts as running until [`done`](Self::done).
    pub fn next(&mut self) -> Option<(Box<str>, T)> {
        if self.running >= self.max_in_flight || self.turns.is_empty() {
            return None;
        }
        let cap = self.account_cap;
        let accounts = &self.accounts;
        let under_cap = self
            .turns
            .iter()
            .position(|a| accounts.get(a).is_some_and(|acc| acc.running < cap));
        let account = self.turns.remove(under_cap.unwrap_or(0))?;
        let entry = self.accounts.get_mut(&account)?;
        let job = entry.waiting.pop_front()?;
        entry.running += 1;
        if !entry.waiting.is_empty() {
            self.turns.push_back(account.clone());
        }
        self.running += 1;
        self.waiting -= 1;
        Some((account, job))
    }

    /// A job of `account` that [`next`](Self::next) started has finished.
    pub fn done(&mut self, account: &str) {
        self.running = self.running.saturating_sub(1);
        if let Some(entry) = self.accounts.get_mut(account) {
            entry.running = entry.running.saturating_sub(1);
            if entry.running == 0 && entry.waiting.is_empty() {
                self.accounts.remove(account);
            }
        }
    }

    /// Jobs in hand that have not started.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Drops every job that has not started (its session ended; the broker redelivers it).
    pub fn clear_waiting(&mut self) {
        self.turns.clear();
        self.waiting = 0;
        self.accounts.retain(|_, a| {
            a.waiting.clear();
            a.running > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;
    use proptest::prelude::*;

    fn start_all(q: &mut FairQueue<u32>) -> Vec<(String, u32)> {
        std::iter::from_fn(|| q.next().map(|(a, j)| (a.to_string(), j))).collect()
    }

    #[test]
    fn a_second_account_overtakes_a_backlog_as_soon_as_a_slot_frees() {
        let mut q = FairQueue::new(4, 2);
        for j in 0..100 {
            q.push("a", j);
        }
        // Nobody else waits: the backlog may fill the lane.
        assert_eq!(start_all(&mut q).len(), 4);
        q.push("b", 1000);
        q.push("b", 1001);
        assert!(q.next().is_none(), "no free slot");
        q.done("a");
        assert_eq!(
            q.next().map(|(a, j)| (a.to_string(), j)),
            Some(("b".into(), 1000))
        );
        q.done("a");
        assert_eq!(
            q.next().map(|(a, j)| (a.to_string(), j)),
            Some(("b".into(), 1001))
        );
        // b has nothing left: a takes every slot again, in its own order.
        q.done("a");
        assert_eq!(q.next().map(|(_, j)| j), Some(4));
    }

    #[test]
    fn accounts_take_turns_and_keep_their_own_order() {
        let mut q = FairQueue::new(100, 100);
        for j in 0..3 {
            q.push("a", j);
            q.push("b", 10 + j);
        }
        q.push("c", 20);
        let order: Vec<u32> = start_all(&mut q).into_iter().map(|(_, j)| j).collect();
        assert_eq!(order, [0, 10, 20, 1, 11, 2, 12]);
    }

    #[test]
    fn cleared_jobs_never_start_and_running_ones_still_finish() {
        let mut q = FairQueue::new(1, 1);
        q.push("a", 1);
        q.push("a", 2);
        assert!(q.next().is_some());
        q.clear_waiting();
        assert_eq!(q.waiting(), 0);
        q.done("a");
        assert!(q.next().is_none());
    }

    proptest! {
        /// Over any arrivals and finishes: never more running than the lane's slots, no slot idle
        /// while a job waits, each account's jobs start in order, and an account at its cap
        /// never starts a job while another account under its cap waits.
        #[test]
        fn slots_are_bounded_used_and_shared(
            max in 1u32..8, cap in 1u32..8,
            ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200),
        ) {
            let mut q = FairQueue::new(max, cap);
            let mut running: Vec<(String, u32)> = Vec::new();
            let mut next_job = [0u32; 4];
            let mut last_started = [None::<u32>; 4];
            for (account, finish) in ops {
                if finish && !running.is_empty() {
                    let (a, _) = running.remove(0);
                    q.done(&a);
                } else {
                    let name = account.to_string();
                    q.push(&name, next_job[account as usize]);
                    next_job[account as usize] += 1;
                }
                while let Some((a, j)) = q.next() {
                    let i: usize = a.parse().unwrap();
                    prop_assert!(last_started[i].is_none_or(|l| l < j), "account order");
                    last_started[i] = Some(j);
                    let held = running.iter().filter(|(r, _)| *r == *a).count() as u32;
                    if held >= cap {
                        // Every other waiting account must be at its cap too.
                        prop_assert!(q.accounts.iter().all(|(n, acc)| acc.waiting.is_empty()
                            || **n == *a
                            || running.iter().filter(|(r, _)| r == &n.to_string()).count() as u32 >= cap));
                    }
                    running.push((a.to_string(), j));
                }
                prop_assert!(running.len() as u32 <= max);
                prop_assert!(q.waiting() == 0 || running.len() as u32 == max);
            }
        }
    }
}
