//! Round-robin turns between threads, for interleaved timing.
//!
//! Timing configurations one after another lets a slow spell of a shared or virtual machine
//! land on one of them; running them in parallel makes them compete for the cores. With
//! [`Turn`]s, several training runs live in their own threads and take one step each in a
//! fixed cycle — A, B, C, A, B, C, … — so only one computes at a time and consecutive steps of
//! different configurations are seconds apart at most. [`crate::train::run`] takes a turn for
//! its set-up, for every step and for its final evaluation (`RunOptions::turns`).
//!
//! ```
//! use engram::turns::Turn;
//! use std::sync::{Arc, Mutex};
//!
//! let log = Arc::new(Mutex::new(Vec::new()));
//! std::thread::scope(|s| {
//!     for (me, turn) in Turn::cycle(3).into_iter().enumerate() {
//!         let log = log.clone();
//!         s.spawn(move || {
//!             for _ in 0..2 {
//!                 let _held = turn.hold();
//!                 log.lock().unwrap().push(me);
//!             }
//!         });
//!     }
//! });
//! assert_eq!(*log.lock().unwrap(), [0, 1, 2, 0, 1, 2]);
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug)]
struct State {
    /// Whose turn it is (`None` once everybody has left).
    next: Option<usize>,
    /// Who still takes part.
    active: Vec<bool>,
}

impl State {
    /// The first active participant after `me`, cyclically (`me` itself if it is the only one).
    fn after(&self, me: usize) -> Option<usize> {
        let n = self.active.len();
        (1..=n).map(|k| (me + k) % n).find(|&j| self.active[j])
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A participant that panicked while holding the lock left the state consistent (every
        // update is a single assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One participant of a round-robin cycle. Dropping it leaves the cycle, so the others never
/// wait for a participant that has finished or failed.
#[derive(Debug)]
pub struct Turn {
    shared: Arc<Shared>,
    me: usize,
}

/// A held turn; dropping it passes the turn to the next participant.
#[must_use = "the turn passes on as soon as the guard is dropped"]
#[derive(Debug)]
pub struct TurnGuard<'a> {
    turn: &'a Turn,
}

impl Turn {
    /// `n` participants; participant 0 moves first.
    pub fn cycle(n: usize) -> Vec<Turn> {
        let shared = Arc::new(Shared { state: Mutex::new(State { next: (n > 0).then_some(0), active: vec![true; n] }), changed: Condvar::new() });
        (0..n).map(|me| Turn { shared: shared.clone(), me }).collect()
    }

    /// Wait for this participant's turn and hold it until the guard is dropped.
    pub fn hold(&self) -> TurnGuard<'_> {
        let mut st = self.shared.lock();
        while st.next != Some(self.me) {
            st = self.shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        TurnGuard { turn: self }
    }
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let me = self.turn.me;
        let mut st = self.turn.shared.lock();
        st.next = st.after(me);
        self.turn.shared.changed.notify_all();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.active[self.me] = false;
        if st.next == Some(self.me) {
            st.next = st.after(self.me);
        }
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_cycle(steps: &[usize]) -> Vec<usize> {
        let log = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for (me, turn) in Turn::cycle(steps.len()).into_iter().enumerate() {
                let (log, n) = (log.clone(), steps[me]);
                s.spawn(move || {
                    for _ in 0..n {
                        let _held = turn.hold();
                        log.lock().unwrap().push(me);
                        std::thread::yield_now();
                    }
                });
            }
        });
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    }

    #[test]
    fn participants_alternate_in_a_fixed_cycle() {
        assert_eq!(run_cycle(&[3, 3, 3]), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_participant_that_finishes_early_leaves_the_cycle() {
        // 1 stops after one turn, 0 after two; 2 goes on alone without waiting for them.
        assert_eq!(run_cycle(&[2, 1, 4]), [0, 1, 2, 0, 2, 2, 2]);
    }

    #[test]
    fn a_participant_that_never_takes_a_turn_is_skipped() {
        assert_eq!(run_cycle(&[2, 0, 2]), [0, 2, 0, 2]);
    }
}
