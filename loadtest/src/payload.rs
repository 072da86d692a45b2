//! The load tool's frame payload: a stamp (scheduled send time, the time the sender queued
//! it, sequence number, sender) followed by zero padding up to the scenario's frame size.
//!
//! The relay treats payloads as opaque bytes, so the receiving endpoint can read the stamp
//! and measure end-to-end latency from the time the frame was *scheduled*, not the time it
//! was written: a sender that falls behind its timetable shows up as latency instead of
//! silently sending less (no coordinated omission). The time it was queued gives the
//! second measure, from the send: what the server and the network took, without the
//! tool's own delay in sending.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Identifies a load-tool payload ("NOC load test, layout 2").
pub const STAMP_MAGIC: [u8; 4] = *b"NLT2";
/// Layout 1, of earlier versions (no send time), still read: the workers of one campaign
/// may run different versions.
const STAMP_MAGIC_1: [u8; 4] = *b"NLT1";
/// Bytes of the stamp; the smallest allowed frame size.
pub const STAMP_BYTES: usize = 4 + 8 + 8 + 8 + 4;
/// Bytes of a layout-1 stamp.
const STAMP_BYTES_1: usize = 4 + 8 + 8 + 4;

/// What a payload carries besides padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the frame was due to be sent, nanoseconds since the Unix epoch.
    pub scheduled_unix_ns: u64,
    /// When the sender queued it for writing (its scheduled time in a layout-1 stamp).
    pub sent_unix_ns: u64,
    /// The sender's sequence number (also its frame id).
    pub seq: u64,
    /// Index of the sending device, or of the sending VES.
    pub sender: u32,
}

impl Stamp {
    /// The payload bytes: the stamp, then zeros up to `size` (at least [`STAMP_BYTES`]).
    pub fn payload(&self, size: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(size.max(STAMP_BYTES));
        self.write(&mut b, size);
        b.freeze()
    }

    /// Appends the payload to `buf`.
    pub fn write(&self, buf: &mut BytesMut, size: usize) {
        buf.put_slice(&STAMP_MAGIC);
        buf.put_u64(self.scheduled_unix_ns);
        buf.put_u64(self.sent_unix_ns);
        buf.put_u64(self.seq);
        buf.put_u32(self.sender);
        buf.put_bytes(0, size.saturating_sub(STAMP_BYTES));
    }

    /// Reads the stamp of a payload; `None` for bytes that are not a load-tool payload.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&payload[at..at + 4]);
            u32::from_be_bytes(b)
        };
        match payload.get(..4)? {
            m if m == STAMP_MAGIC && payload.len() >= STAMP_BYTES => Some(Stamp {
                scheduled_unix_ns: u64_at(4),
                sent_unix_ns: u64_at(12),
                seq: u64_at(20),
                sender: u32_at(28),
            }),
            m if m == STAMP_MAGIC_1 && payload.len() >= STAMP_BYTES_1 => {
                let scheduled_unix_ns = u64_at(4);
                Some(Stamp { scheduled_unix_ns, sent_unix_ns: scheduled_unix_ns, seq: u64_at(12), sender: u32_at(20) })
            }
            _ => None,
        }
    }
}

/// How early a sender wakes for its next frame. tokio's timers fire on whole-millisecond
/// ticks at or after their deadline, so a sender that slept until a frame's time sent it
/// up to a millisecond late, and that lateness was measured as latency: with no server in
/// between (`bench/cpu_per_frame.sh`, target `direct`) the tool alone showed 0.75 ms at
/// the median and 1.5 ms at p99. Waking this much earlier, a sender sends every frame due
/// before the next tick, stamped as [`Clock::send_stamp`] says.
pub const TIMER_LEAD: Duration = Duration::from_millis(1);

/// When to wake for a frame due at `due`: [`TIMER_LEAD`] before it.
pub fn wake_for(due: Instant) -> Instant {
    due.checked_sub(TIMER_LEAD).unwrap_or(due)
}

/// Whether a frame due at `due` goes out in a wake-up at `now`.
pub fn sends_now(due: Instant, now: Instant) -> bool {
    due <= now + TIMER_LEAD
}

/// Microseconds from `from_ns` to `to_ns`, at least 1 (the histograms' lowest value).
pub fn micros_between(from_ns: u64, to_ns: u64) -> u64 {
    (to_ns.saturating_sub(from_ns) / 1000).max(1)
}

/// A monotonic clock expressed in Unix nanoseconds.
///
/// Stamps must be comparable between the sending and the receiving task, and between
/// workers of a campaign on other machines: the epoch base makes them wall-clock times,
/// while `Instant` keeps them monotonic within one process.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let base_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Self { base: Instant::now(), base_unix_ns }
    }

    /// Now, in Unix nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.at(Instant::now())
    }

    /// An instant, in Unix nanoseconds.
    pub fn at(&self, t: Instant) -> u64 {
        self.base_unix_ns + t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The stamp of a frame due at `due` that leaves at `now`: its due time when it is late
    /// (the wait for the tool counts as latency: an open-loop timetable without coordinated
    /// omission), the time it leaves when it is early (see [`TIMER_LEAD`]), so that no
    /// frame is measured from before it was sent.
    pub fn send_stamp(&self, due: Instant, now: Instant) -> u64 {
        self.at(due.min(now))
    }

    /// The instant of a Unix-nanosecond time (clamped to the clock's start).
    pub fn instant(&self, unix_ns: u64) -> Instant {
        self.base + Duration::from_nanos(unix_ns.saturating_sub(self.base_unix_ns))
    }

    /// Microseconds from `from_ns` to now, at least 1 (the histograms' lowest value).
    pub fn micros_since(&self, from_ns: u64) -> u64 {
        micros_between(from_ns, self.now_ns())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_pads() {
        let s = Stamp {
            scheduled_unix_ns: 1_700_000_000_123_456_789,
            sent_unix_ns: 1_700_000_000_124_000_000,
            seq: 42,
            sender: 7,
        };
        let p = s.payload(256);
        assert_eq!(p.len(), 256);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(s.payload(1).len(), STAMP_BYTES, "never shorter than the stamp");
        assert_eq!(Stamp::read(&p[..STAMP_BYTES - 1]), None, "cut short");
        assert_eq!(Stamp::read(b"hello"), None);
        assert_eq!(Stamp::read(b""), None);
        assert_eq!(Stamp::read(&[0u8; 64]), None);
        // Layout 1 (earlier versions): no send time, which reads as the scheduled time.
        let mut v1 = b"NLT1".to_vec();
        v1.extend_from_slice(&s.scheduled_unix_ns.to_be_bytes());
        v1.extend_from_slice(&42u64.to_be_bytes());
        v1.extend_from_slice(&7u32.to_be_bytes());
        let old = Stamp { sent_unix_ns: s.scheduled_unix_ns, ..s };
        assert_eq!(Stamp::read(&v1), Some(old));
        v1.resize(256, 0);
        assert_eq!(Stamp::read(&v1), Some(old));
        assert_eq!(Stamp::read(&v1[..STAMP_BYTES_1 - 1]), None);
    }

    #[test]
    fn clock_is_monotonic_in_unix_time() {
        let c = Clock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a && a > 1_600_000_000_000_000_000);
        assert!(c.micros_since(a) >= 1);
        let t = c.instant(a + 5_000_000);
        assert_eq!(c.at(t), a + 5_000_000);
    }

    #[test]
    fn frames_leave_within_the_timer_lead_and_are_never_stamped_before_they_leave() {
        let c = Clock::new();
        let now = Instant::now();
        let soon = now + TIMER_LEAD / 2;
        let later = now + TIMER_LEAD * 2;
        let past = now.checked_sub(Duration::from_millis(5)).expect("an instant 5 ms ago");
        assert!(sends_now(past, now) && sends_now(soon, now) && !sends_now(later, now));
        assert_eq!(wake_for(later), later - TIMER_LEAD);
        // Early: measured from when it leaves. Late: from when it was due, so the tool's
        // own delay counts (no coordinated omission).
        assert_eq!(c.send_stamp(soon, now), c.at(now));
        assert_eq!(c.send_stamp(past, now), c.at(past));
    }
}
