//! The fan-out check's bookkeeping: the writer's log of what it sent and when,
//! and each socket's tally of what arrived (latency, loss, duplicates, order).
//! Kept free of I/O so the rules are unit-tested directly.

use std::{
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
    time::Instant,
};

use crate::frame::{self, Frame};

/// A monotonic clock as nanoseconds since the run began, so send and receive
/// instants fit in atomics shared between the writer and the readers.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the start (at least 1, so 0 can mean "never").
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The instant `ns` nanoseconds after the start.
    pub fn at(&self, ns: u64) -> Instant {
        self.0 + std::time::Duration::from_nanos(ns)
    }
}

/// A short id unique to this run, so its values are told from earlier runs'.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos ^ (u64::from(std::process::id()) << 40);
    let mut id = String::new();
    for _ in 0..8 {
        id.push(char::from_digit((x % 36) as u32, 36).expect("digit < 36"));
        x /= 36;
    }
    id
}

/// The values of one run: `lg-<run>-<k>`, so a socket tells the run's updates
/// (and which one) from anybody else's.
#[derive(Clone, Debug)]
pub struct ValueTag {
    prefix: String,
}

impl ValueTag {
    /// The tag of run `run` (a short id unique to the run).
    pub fn new(run: &str) -> Self {
        Self {
            prefix: format!("lg-{run}-"),
        }
    }

    /// The value of update `k`.
    pub fn value(&self, k: u64) -> String {
        format!("{}{k}", self.prefix)
    }

    /// Which update a value belongs to, if it is one of this run's.
    pub fn index_of(&self, value: &str) -> Option<u64> {
        value.strip_prefix(&self.prefix)?.parse().ok()
    }
}

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const FAILED: u8 = 2;

/// What the writer did with each update: when it was sent, and whether the
/// server acknowledged it (only acknowledged updates can be lost).
pub struct SendLog {
    sent_ns: Vec<AtomicU64>,
    outcome: Vec<AtomicU8>,
}

impl SendLog {
    /// A log for updates `0..len`.
    pub fn new(len: u64) -> Self {
        Self {
            sent_ns: (0..len).map(|_| AtomicU64::new(0)).collect(),
            outcome: (0..len).map(|_| AtomicU8::new(PENDING)).collect(),
        }
    }

    /// How many updates the run plans.
    pub fn len(&self) -> u64 {
        self.sent_ns.len() as u64
    }

    /// Whether the run plans no update at all.
    pub fn is_empty(&self) -> bool {
        self.sent_ns.is_empty()
    }

    /// Notes that update `k` is being sent now (before the request leaves, so a
    /// reader never sees its frame first).
    pub fn mark_sent(&self, k: u64, ns: u64) {
        self.sent_ns[k as usize].store(ns, Ordering::Release);
    }

    /// When update `k` was sent, if it was.
    pub fn sent_ns(&self, k: u64) -> Option<u64> {
        let ns = self.sent_ns.get(k as usize)?.load(Ordering::Acquire);
        (ns != 0).then_some(ns)
    }

    /// Notes the server's answer to update `k`.
    pub fn mark_outcome(&self, k: u64, acked: bool) {
        self.outcome[k as usize].store(if acked { ACKED } else { FAILED }, Ordering::Release);
    }

    /// Whether the server acknowledged update `k`.
    pub fn is_acked(&self, k: u64) -> bool {
        self.outcome[k as usize].load(Ordering::Acquire) == ACKED
    }

    /// How many updates the server acknowledged.
    pub fn acked(&self) -> u64 {
        (0..self.len()).filter(|&k| self.is_acked(k)).count() as u64
    }
}

/// What one frame was to the tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// One of this run's updates, the first time.
    Delivered,
    /// One of this run's updates, again.
    Duplicate,
    /// An update that is not this run's (another writer).
    Foreign,
    /// `hello`, `pong` and the like.
    Ignored,
    /// Not a frame this client understands.
    Unparsed,
}

/// One socket's tally.
///
/// Rules: a run's update seen before on this socket is a duplicate (and nothing
/// else). Any other update whose `seq` is not above the highest seen so far
/// (starting from `hello`'s) is out of order. An acknowledged update never seen is
/// lost.
#[derive(Debug)]
pub struct Tally {
    max_seq: u64,
    seen: Vec<u64>,
    /// Run updates received (first time each).
    pub delivered: u64,
    /// Run updates received again.
    pub duplicates: u64,
    /// Updates whose `seq` did not increase.
    pub out_of_order: u64,
    /// Updates from other writers.
    pub foreign: u64,
    /// Frames that could not be read.
    pub unparsed: u64,
    /// PATCH sent → frame received, in microseconds, one per delivery (folded
    /// into a histogram at the end: a histogram per socket would cost ~200 KiB
    /// each at 10,000 sockets).
    pub latencies_us: Vec<u32>,
    /// When the last run update arrived (ns on the run's clock; 0: never).
    pub last_ns: u64,
}

impl Tally {
    /// A tally for a socket whose `hello` named `hello_seq`, in a run of `planned`
    /// updates.
    pub fn new(hello_seq: u64, planned: u64) -> Self {
        Self {
            max_seq: hello_seq,
            seen: vec![0; planned.div_ceil(64) as usize],
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            unparsed: 0,
            latencies_us: Vec::new(),
            last_ns: 0,
        }
    }

    /// Accounts for one text frame received at `now_ns`.
    pub fn on_text(&mut self, text: &str, now_ns: u64, tag: &ValueTag, log: &SendLog) -> Seen {
        let (seq, first_name) = match frame::parse(text) {
            Some(Frame::Update { seq, first_name }) => (seq, first_name),
            Some(Frame::Hello { .. } | Frame::Other) => return Seen::Ignored,
            None => {
                self.unparsed += 1;
                return Seen::Unparsed;
            }
        };
        let k = first_name
            .and_then(|name| tag.index_of(&name))
            .filter(|&k| k < log.len());
        if let Some(k) = k
            && !self.insert(k)
        {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        if seq <= self.max_seq {
            self.out_of_order += 1;
        } else {
            self.max_seq = seq;
        }
        let Some(k) = k else {
            self.foreign += 1;
            return Seen::Foreign;
        };
        self.delivered += 1;
        self.last_ns = now_ns;
        if let Some(sent) = log.sent_ns(k) {
            let micros = now_ns.saturating_sub(sent) / 1_000;
            self.latencies_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        Seen::Delivered
    }

    /// Marks update `k` seen; false if it already was.
    fn insert(&mut self, k: u64) -> bool {
        let (word, bit) = ((k / 64) as usize, 1u64 << (k % 64));
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    /// Whether update `k` arrived on this socket.
    pub fn has(&self, k: u64) -> bool {
        self.seen
            .get((k / 64) as usize)
            .is_some_and(|word| word & (1u64 << (k % 64)) != 0)
    }

    /// How many acknowledged updates never arrived on this socket.
    pub fn lost(&self, log: &SendLog) -> u64 {
        (0..log.len())
            .filter(|&k| log.is_acked(k) && !self.has(k))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, name: &str) -> String {
        format!(
            r#"{{"type":"user_update","seq":{seq},"epoch":"e","data":{{"action":"update","user":{{"id":1,"first_name":"{name}","last_name":"x","version":{seq}}},"changed":["first_name"]}}}}"#
        )
    }

    fn sent_log(n: u64) -> SendLog {
        let log = SendLog::new(n);
        for k in 0..n {
            log.mark_sent(k, 1_000_000 * (k + 1));
            log.mark_outcome(k, true);
        }
        log
    }

    #[test]
    fn run_ids_are_short_and_alphanumeric() {
        let id = run_id();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn values_round_trip_and_foreign_ones_do_not_match() {
        let tag = ValueTag::new("r1");
        assert_eq!(tag.value(17), "lg-r1-17");
        assert_eq!(tag.index_of("lg-r1-17"), Some(17));
        assert_eq!(tag.index_of("lg-r2-17"), None);
        assert_eq!(tag.index_of("lg-r1-x"), None);
        assert_eq!(tag.index_of("Ada"), None);
    }

    #[test]
    fn a_clean_stream_has_latencies_and_no_faults() {
        let (tag, log) = (ValueTag::new("r"), sent_log(3));
        let mut tally = Tally::new(10, log.len());
        for k in 0..3 {
            let now = 1_000_000 * (k + 1) + 2_500_000;
            let seen = tally.on_text(&frame(11 + k, &tag.value(k)), now, &tag, &log);
            assert_eq!(seen, Seen::Delivered);
        }
        assert_eq!(tally.latencies_us, [2_500, 2_500, 2_500]);
        assert_eq!((tally.delivered, tally.lost(&log)), (3, 0));
        assert_eq!((tally.duplicates, tally.out_of_order), (0, 0));
        assert_eq!(tally.last_ns, 5_500_000);
    }

    #[test]
    fn counts_duplicates_reorders_and_losses_separately() {
        let (tag, log) = (ValueTag::new("r"), sent_log(6));
        let mut tally = Tally::new(0, log.len());
        let mut feed = |seq, k| tally.on_text(&frame(seq, &tag.value(k)), 9e9 as u64, &tag, &log);
        assert_eq!(feed(1, 0), Seen::Delivered);
        assert_eq!(feed(1, 0), Seen::Duplicate); // the same frame twice
        assert_eq!(feed(3, 2), Seen::Delivered); // 1 swapped with 2
        assert_eq!(feed(2, 1), Seen::Delivered); // late: out of order
        assert_eq!(feed(5, 4), Seen::Delivered); // 3 never comes
        // 5 never comes either
        assert_eq!((tally.delivered, tally.duplicates), (4, 1));
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(tally.lost(&log), 2);
    }

    #[test]
    fn unacknowledged_updates_are_not_lost_and_foreign_ones_keep_order() {
        let (tag, log) = (ValueTag::new("r"), SendLog::new(2));
        log.mark_sent(0, 1);
        log.mark_outcome(0, false);
        let mut tally = Tally::new(5, log.len());
        assert_eq!(
            tally.on_text(&frame(6, "Ada"), 2, &tag, &log),
            Seen::Foreign
        );
        assert_eq!(
            tally.on_text(&frame(6, "Bob"), 3, &tag, &log),
            Seen::Foreign
        );
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(
            tally.on_text(r#"{"type":"pong"}"#, 4, &tag, &log),
            Seen::Ignored
        );
        assert_eq!(tally.on_text("garbage", 5, &tag, &log), Seen::Unparsed);
        assert_eq!(tally.lost(&log), 0);
        // A frame from before the socket's hello is out of order.
        assert_eq!(
            tally.on_text(&frame(4, &tag.value(1)), 6, &tag, &log),
            Seen::Delivered
        );
        assert_eq!(tally.out_of_order, 2);
        // Never sent: no latency to record.
        assert!(tally.latencies_us.is_empty());
    }
}
