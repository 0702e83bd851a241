//! The batching policy: when the next entry opens and which queued commands go in it. Pure:
//! a function of what has arrived and of the (given) time, so it is tested with logical
//! instants and no Raft, no channel, no clock. The batching task in `mod.rs` only moves
//! commands from its channel into [`Queue::arrive`] and waits as [`Queue::next`] says.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS};

/// What the policy needs to know of a queued command.
pub(super) trait Queued {
    /// Its encoded size, counted against [`MAX_BATCH_BYTES`].
    fn encoded_bytes(&self) -> usize;
    /// For a command that may ride (wait for an entry another command opens): the latest
    /// it may be proposed. `None`: it opens an entry of its own.
    fn ride_until(&self) -> Option<Instant>;
}

/// What the batching task should do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Take a batch ([`Queue::take_batch`]) and propose it.
    Open,
    /// Receive more commands, until `until` at the latest (no limit when `None`).
    Wait { until: Option<Instant> },
}

/// Commands taken off the channel and not yet in an entry.
pub(super) struct Queue<T> {
    /// The command that opens the next entry: it cannot wait, or it did not fit the last one.
    opener: Option<T>,
    /// Commands waiting to ride with the next entry, oldest first; at most a full entry's worth.
    riding: VecDeque<T>,
}

impl<T: Queued> Queue<T> {
    pub fn new() -> Self {
        Self {
            opener: None,
            riding: VecDeque::new(),
        }
    }

    /// A command came. Only called while [`Self::next`] says `Wait`, so there is no opener yet.
    pub fn arrive(&mut self, command: T) {
        debug_assert!(
            self.opener.is_none(),
            "the task stops receiving once an entry must open"
        );
        if command.ride_until().is_some() {
            self.riding.push_back(command);
        } else {
            self.opener = Some(command);
        }
    }

    /// An entry opens when a command that cannot wait is here, when riders fill an entry, or
    /// when the earliest rider's wait has run out at `now`; otherwise wait for the next
    /// command, or until that rider's time.
    pub fn next(&self, now: Instant) -> Next {
        if self.opener.is_some() || self.riding.len() >= MAX_BATCH_COMMANDS {
            return Next::Open;
        }
        match self.riding.iter().filter_map(Queued::ride_until).min() {
            Some(due) if due <= now => Next::Open,
            until => Next::Wait { until },
        }
    }

    /// The next entry's commands: the riders first (they came first), then the opener, then
    /// whatever else `more` yields (commands that queued meanwhile, riders included), within
    /// [`MAX_BATCH_COMMANDS`] and [`MAX_BATCH_BYTES`]. What does not fit opens the entry after.
    pub fn take_batch(&mut self, mut more: impl FnMut() -> Option<T>) -> Vec<T> {
        let mut batch = Batch::default();
        while let Some(rider) = self.riding.pop_front() {
            if let Some(rider) = batch.add(rider) {
                self.riding.push_front(rider);
                break;
            }
        }
        if let Some(opener) = self.opener.take() {
            self.opener = batch.add(opener);
        }
        while self.opener.is_none() && batch.commands.len() < MAX_BATCH_COMMANDS {
            let Some(next) = more() else {
                break;
            };
            self.opener = batch.add(next);
        }
        debug_assert!(!batch.commands.is_empty(), "an entry opens with a command");
        debug_assert!(batch.commands.len() <= MAX_BATCH_COMMANDS);
        batch.commands
    }
}

/// The commands of one entry, within [`MAX_BATCH_COMMANDS`] and [`MAX_BATCH_BYTES`].
struct Batch<T> {
    commands: Vec<T>,
    bytes: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T: Queued> Batch<T> {
    /// Adds `next`, or gives it back when the entry is full. A single command larger than
    /// [`MAX_BATCH_BYTES`] still goes, alone.
    fn add(&mut self, next: T) -> Option<T> {
        let fits = self.commands.is_empty()
            || (self.commands.len() < MAX_BATCH_COMMANDS
                && self.bytes + next.encoded_bytes() <= MAX_BATCH_BYTES);
        if !fits {
            return Some(next);
        }
        self.bytes += next.encoded_bytes();
        self.commands.push(next);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A command: a name, its size, and (for a rider) its ride deadline.
    #[derive(Debug, Clone, PartialEq)]
    struct Cmd {
        name: &'static str,
        bytes: usize,
        ride_until: Option<Instant>,
    }

    impl Queued for Cmd {
        fn encoded_bytes(&self) -> usize {
            self.bytes
        }

        fn ride_until(&self) -> Option<Instant> {
            self.ride_until
        }
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn opener(name: &'static str) -> Cmd {
        Cmd {
            name,
            bytes: 100,
            ride_until: None,
        }
    }

    fn rider(name: &'static str, until: Instant) -> Cmd {
        Cmd {
            name,
            bytes: 100,
            ride_until: Some(until),
        }
    }

    fn names(batch: &[Cmd]) -> Vec<&'static str> {
        batch.iter().map(|c| c.name).collect()
    }

    fn nothing_more() -> Option<Cmd> {
        None
    }

    #[test]
    fn an_empty_queue_waits_without_a_limit() {
        let queue = Queue::<Cmd>::new();
        assert_eq!(queue.next(Instant::now()), Next::Wait { until: None });
    }

    #[test]
    fn riders_wait_for_an_opener_and_go_first_in_arrival_order() {
        let t0 = Instant::now();
        let mut queue = Queue::new();
        queue.arrive(rider("r1", at(t0, 500)));
        queue.arrive(rider("r2", at(t0, 300)));
        // The earliest rider's time bounds the wait.
        assert_eq!(
            queue.next(at(t0, 10)),
            Next::Wait {
                until: Some(at(t0, 300))
            }
        );
        queue.arrive(opener("o"));
        assert_eq!(queue.next(at(t0, 20)), Next::Open);
        let mut later = vec![opener("later")];
        let batch = queue.take_batch(|| later.pop());
        assert_eq!(names(&batch), ["r1", "r2", "o", "later"]);
        assert_eq!(queue.next(at(t0, 20)), Next::Wait { until: None });
    }

    #[test]
    fn a_rider_nobody_joins_goes_alone_at_its_time() {
        let t0 = Instant::now();
        let mut queue = Queue::new();
        queue.arrive(rider("r", at(t0, 300)));
        assert_ne!(queue.next(at(t0, 299)), Next::Open);
        assert_eq!(queue.next(at(t0, 300)), Next::Open);
        assert_eq!(names(&queue.take_batch(nothing_more)), ["r"]);
    }

    #[test]
    fn a_full_entry_of_riders_opens_at_once() {
        let t0 = Instant::now();
        let mut queue = Queue::new();
        for _ in 0..MAX_BATCH_COMMANDS {
            assert_ne!(queue.next(t0), Next::Open);
            queue.arrive(rider("r", at(t0, 60_000)));
        }
        assert_eq!(queue.next(t0), Next::Open);
    }

    #[test]
    fn an_entry_is_bounded_by_count_and_the_rest_stays_queued() {
        let mut queue = Queue::new();
        queue.arrive(opener("first"));
        let mut arrivals: Vec<Cmd> = (0..MAX_BATCH_COMMANDS + 5).map(|_| opener("x")).collect();
        let batch = queue.take_batch(|| arrivals.pop());
        assert_eq!(batch.len(), MAX_BATCH_COMMANDS);
        assert_eq!(batch[0].name, "first");
        // A full entry stops taking: the other six wait in the channel for the next one.
        assert_eq!(arrivals.len(), 6);
        assert_eq!(queue.next(Instant::now()), Next::Wait { until: None });
        queue.arrive(arrivals.pop().unwrap());
        assert_eq!(queue.next(Instant::now()), Next::Open);
        assert_eq!(queue.take_batch(|| arrivals.pop()).len(), 6);
    }

    #[test]
    fn an_entry_is_bounded_by_bytes_but_one_large_command_still_goes_alone() {
        let big = |name| Cmd {
            name,
            bytes: MAX_BATCH_BYTES / 2 + 1,
            ride_until: None,
        };
        let mut queue = Queue::new();
        queue.arrive(big("a"));
        let mut arrivals = vec![big("b")];
        assert_eq!(names(&queue.take_batch(|| arrivals.pop())), ["a"]);
        assert_eq!(names(&queue.take_batch(nothing_more)), ["b"]);

        let huge = Cmd {
            name: "huge",
            bytes: MAX_BATCH_BYTES * 4,
            ride_until: None,
        };
        let mut queue = Queue::new();
        queue.arrive(huge);
        let mut arrivals = vec![opener("small")];
        assert_eq!(names(&queue.take_batch(|| arrivals.pop())), ["huge"]);
        assert_eq!(names(&queue.take_batch(nothing_more)), ["small"]);
    }

    #[test]
    fn a_rider_that_did_not_fit_opens_the_next_entry_without_waiting_again() {
        let t0 = Instant::now();
        let big_rider = |name| Cmd {
            name,
            bytes: MAX_BATCH_BYTES / 2 + 1,
            ride_until: Some(at(t0, 60_000)),
        };
        let mut queue = Queue::new();
        queue.arrive(opener("o"));
        let mut arrivals = vec![big_rider("late"), big_rider("early")];
        let batch = queue.take_batch(|| arrivals.pop());
        assert_eq!(names(&batch), ["o", "early"]);
        // "late" was taken off the channel for this entry and did not fit: it already waited
        // for an entry once, so it opens the next one instead of riding again.
        assert_eq!(queue.next(t0), Next::Open);
        assert_eq!(names(&queue.take_batch(nothing_more)), ["late"]);
    }
}
