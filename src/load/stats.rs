//! Measurement pieces with no I/O: the loss detector, the send stamp carried
//! in each message's text, latency histograms and rates.

use hdrhistogram::Histogram;

/// Gap ranges remembered at most per tracker; older ones are folded into a
/// plain count (they can no longer be told apart from duplicates if they
/// arrive very late, which would itself be a daemon bug worth reporting).
const MAX_RANGES: usize = 1024;

/// Checks that one receiver sees a room's `seq` as 1, 2, 3, ...
///
/// The protocol numbers a room's MESSAGEs from 1 and promises every member
/// the same messages in the same order, so for a receiver that joined before
/// the first message, anything but `next` is a fault:
///
/// - `seq > next`: a **gap**; the skipped seqs are remembered as missing.
/// - `seq < next` and missing: a **reorder** (it arrived late); it is no
///   longer missing.
/// - `seq < next` and not missing: a **duplicate**.
///
/// At the end, [`SeqTracker::lost`] counts what never arrived, including the
/// tail after the last seq seen.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// The seq expected next.
    next: u64,
    /// Half-open ranges `[from, to)` of seqs skipped and not seen since.
    missing: Vec<(u64, u64)>,
    /// Missing seqs whose ranges were dropped from `missing` (overflow).
    missing_overflow: u64,
    /// Gap events (a jump forward), however many seqs each skipped.
    pub gaps: u64,
    /// Seqs received twice.
    pub duplicates: u64,
    /// Seqs received after a later one.
    pub reorders: u64,
    /// Messages received, duplicates included.
    pub received: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker::new()
    }
}

impl SeqTracker {
    /// A tracker for a room joined before its first message.
    pub fn new() -> SeqTracker {
        SeqTracker {
            next: 1,
            missing: Vec::new(),
            missing_overflow: 0,
            gaps: 0,
            duplicates: 0,
            reorders: 0,
            received: 0,
        }
    }

    /// Notes one received seq.
    #[inline]
    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            self.gaps += 1;
            if self.missing.len() == MAX_RANGES {
                let (a, b) = self.missing.remove(0);
                self.missing_overflow += b - a;
            }
            self.missing.push((self.next, seq));
            self.next = seq + 1;
        } else {
            self.late(seq);
        }
    }

    #[cold]
    fn late(&mut self, seq: u64) {
        let found = self.missing.iter().position(|&(a, b)| a <= seq && seq < b);
        let Some(i) = found else {
            self.duplicates += 1;
            return;
        };
        self.reorders += 1;
        let (a, b) = self.missing[i];
        match (seq == a, seq + 1 == b) {
            (true, true) => {
                self.missing.remove(i);
            }
            (true, false) => self.missing[i].0 = seq + 1,
            (false, true) => self.missing[i].1 = seq,
            (false, false) => {
                self.missing[i].1 = seq;
                self.missing.insert(i + 1, (seq + 1, b));
            }
        }
    }

    /// The highest seq seen in order or after a gap (0 before any).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Seqs up to `final_seq` (the room's last message) never received.
    pub fn lost(&self, final_seq: u64) -> u64 {
        let holes: u64 = self.missing.iter().map(|&(a, b)| b - a).sum();
        holes + self.missing_overflow + final_seq.saturating_sub(self.last())
    }
}

/// Bytes of the stamp at the front of every load message's text.
pub const STAMP_LEN: usize = 32;

/// What a load message's text carries: when it was (meant to be) sent, by
/// which publisher, and its number in that publisher's sequence. Written as
/// 32 lower-case hex digits (16 + 8 + 8) so the text stays valid UTF-8, then
/// padded with `.` to the payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds since the run's time base (the intended send time).
    pub sent_ns: u64,
    /// The publisher's number.
    pub publisher: u32,
    /// The message's number within that publisher's sequence.
    pub count: u32,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Eight lowercase hex digits (trusted, as in [`Stamp::sent_ns_of`]) in
/// one 64-bit register: each byte becomes its digit (low nibble, plus 9
/// for `a`-`f`, whose bit 6 is set), then neighbouring digits are folded
/// together: pairs into bytes, bytes into 16 bits, then into 32.
#[inline]
fn hex8(d: &[u8; 8]) -> u32 {
    let v = u64::from_be_bytes(*d);
    let x = (v & 0x0f0f_0f0f_0f0f_0f0f) + 9 * ((v >> 6) & 0x0101_0101_0101_0101);
    let x = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
    let x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
    (x | (x >> 16)) as u32
}

impl Stamp {
    /// Appends the stamp and padding: `payload` bytes in all (at least
    /// [`STAMP_LEN`]).
    pub fn write(&self, out: &mut Vec<u8>, payload: usize) {
        let start = out.len();
        put_hex(out, self.sent_ns, 16);
        put_hex(out, self.publisher as u64, 8);
        put_hex(out, self.count as u64, 8);
        let pad = payload.saturating_sub(out.len() - start);
        out.resize(out.len() + pad, b'.');
    }

    /// Only the publisher and its count, on the receive hot path of a
    /// Redis run (which has no room seq: loss is checked per publisher)
    /// and of every version-3 member (the exactly-once check). Like
    /// [`Stamp::sent_ns_of`], it trusts the digits; eight at a time in one
    /// register, since a digit at a time made this a tenth of a version-3
    /// receiver's time.
    #[inline]
    pub fn publisher_count_of(text: &[u8]) -> Option<(u32, u32)> {
        let b: &[u8; 16] = text.get(16..32)?.try_into().ok()?;
        let (p, c) = b.split_at(8);
        Some((hex8(p.try_into().ok()?), hex8(c.try_into().ok()?)))
    }

    /// Only the send time, on the receive hot path (run for every message
    /// delivered): 16 hex digits without a branch per digit. It does not
    /// reject non-hex bytes; rooms are unique to the run, so every text
    /// there is a stamp this generator wrote. `None` for a short text.
    #[inline]
    pub fn sent_ns_of(text: &[u8]) -> Option<u64> {
        let b: &[u8; 16] = text.get(..16)?.try_into().ok()?;
        let mut v = 0u64;
        for &c in b {
            // '0'..='9' is 0x30..=0x39 (bit 6 clear): the low nibble is the
            // digit. 'a'..='f' is 0x61..=0x66 (bit 6 set): low nibble + 9.
            v = (v << 4) | ((c & 0x0f) + 9 * (c >> 6)) as u64;
        }
        Some(v)
    }

    /// Reads the stamp at the front of a message's text.
    pub fn parse(text: &str) -> Option<Stamp> {
        let b = text.as_bytes().get(..STAMP_LEN)?;
        Some(Stamp {
            sent_ns: get_hex(&b[..16])?,
            publisher: get_hex(&b[16..24])? as u32,
            count: get_hex(&b[24..32])? as u32,
        })
    }
}

/// A latency histogram in nanoseconds, 1 ns to 10 minutes, 3 significant
/// digits (values above the top are clamped, not dropped).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant bounds are valid")
}

/// The figures a run reports for one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Quantiles {
    /// Summarises a histogram of nanoseconds in microseconds.
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Quantiles {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// The open-loop schedule's step: nanoseconds between one publisher's
/// messages at `rate` messages a second (at least 1).
pub fn interval_ns(rate: f64) -> u64 {
    (1e9 / rate).max(1.0) as u64
}

/// When publisher `k` of `publishers` sends its first message: the
/// publishers' phases are spread evenly over one interval, so P
/// publishers at R msgs/s make a steady P*R msgs/s, not P-message bursts.
/// Message `n` is then due at `first_due + n * interval`, whatever the
/// replies (open loop).
pub fn first_due(start_ns: u64, interval: u64, k: u64, publishers: u64) -> u64 {
    start_ns + interval * k / publishers.max(1)
}

/// Events per second over `secs` (0 for an empty window).
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// A count for people: `950`, `12.3k`, `4.56M`.
pub fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds for people: `850us`, `1.25ms`, `2.10s`.
pub fn human_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.0}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::new();
        for &s in seqs {
            t.observe(s);
        }
        t
    }

    #[test]
    fn in_order_is_clean() {
        let t = track(&[1, 2, 3, 4]);
        assert_eq!((t.gaps, t.duplicates, t.reorders), (0, 0, 0));
        assert_eq!(t.lost(4), 0);
        assert_eq!(t.received, 4);
    }

    #[test]
    fn gaps_count_missing_seqs() {
        let t = track(&[1, 2, 5, 6, 9]);
        assert_eq!(t.gaps, 2);
        assert_eq!(t.lost(9), 4); // 3, 4, 7, 8
        assert_eq!(t.lost(11), 6); // and the tail 10, 11
        let first_lost = track(&[2, 3]);
        assert_eq!((first_lost.gaps, first_lost.lost(3)), (1, 1));
    }

    #[test]
    fn tail_loss_without_any_gap() {
        let t = track(&[1, 2]);
        assert_eq!(t.gaps, 0);
        assert_eq!(t.lost(5), 3);
        assert_eq!(SeqTracker::new().lost(2), 2);
    }

    #[test]
    fn duplicates_are_not_loss() {
        let t = track(&[1, 2, 2, 3, 1]);
        assert_eq!((t.duplicates, t.reorders, t.gaps), (2, 0, 0));
        assert_eq!(t.lost(3), 0);
    }

    #[test]
    fn reorders_fill_gaps() {
        // 4 arrives before 2 and 3; then both come late.
        let t = track(&[1, 4, 3, 2, 5]);
        assert_eq!((t.gaps, t.reorders, t.duplicates), (1, 2, 0));
        assert_eq!(t.lost(5), 0);
        // A late seq from the middle of a range splits it.
        let t = track(&[1, 6, 3]);
        assert_eq!(t.reorders, 1);
        assert_eq!(t.lost(6), 3); // 2, 4, 5
        let t = track(&[1, 6, 3, 3]);
        assert_eq!(t.duplicates, 1);
    }

    #[test]
    fn many_gaps_overflow_into_a_count() {
        let mut t = SeqTracker::new();
        for i in 0..(MAX_RANGES as u64 + 10) {
            t.observe(2 * i + 2); // every odd seq is skipped
        }
        let last = t.last();
        assert_eq!(t.gaps, MAX_RANGES as u64 + 10);
        assert_eq!(t.lost(last), MAX_RANGES as u64 + 10);
    }

    #[test]
    fn publisher_and_count_read_fast() {
        let mut out = Vec::new();
        let stamp = Stamp {
            sent_ns: 12,
            publisher: 0xabc,
            count: 0x1234_5678,
        };
        stamp.write(&mut out, 40);
        assert_eq!(Stamp::publisher_count_of(&out), Some((0xabc, 0x1234_5678)));
        assert_eq!(Stamp::publisher_count_of(&out[..31]), None);
        for v in [
            0,
            1,
            0x9,
            0xa,
            0xf,
            0x10,
            0x0123_4567,
            0x89ab_cdef,
            u32::MAX,
        ] {
            assert_eq!(hex8(format!("{v:08x}").as_bytes().try_into().unwrap()), v);
        }
    }

    #[test]
    fn stamps_round_trip_at_any_size() {
        let s = Stamp {
            sent_ns: 123_456_789_012,
            publisher: 7,
            count: 0xdead_beef,
        };
        for size in [0, 31, 32, 64, 512] {
            let mut out = b"xx".to_vec();
            s.write(&mut out, size);
            assert_eq!(out.len(), 2 + size.max(STAMP_LEN));
            let text = std::str::from_utf8(&out[2..]).unwrap();
            assert_eq!(Stamp::parse(text), Some(s));
        }
        assert_eq!(Stamp::parse("short"), None);
        let mut out = Vec::new();
        s.write(&mut out, 64);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(Stamp::sent_ns_of(text.as_bytes()), Some(s.sent_ns));
        assert_eq!(
            Stamp::sent_ns_of(b"0123456789abcdef"),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(Stamp::sent_ns_of(b"0123456789abcde"), None);
        assert_eq!(Stamp::parse(&"g".repeat(40)), None);
    }

    #[test]
    fn quantiles_in_microseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let q = Quantiles::of(&h);
        assert_eq!(q.count, 1000);
        assert!((q.p50 - 500.0).abs() < 1.0, "{q:?}");
        assert!((q.p90 - 900.0).abs() < 1.0, "{q:?}");
        assert!((q.p99 - 990.0).abs() < 1.0, "{q:?}");
        assert!((q.max - 1000.0).abs() < 1.0, "{q:?}");
        assert_eq!(Quantiles::of(&latency_histogram()), Quantiles::default());
        // Merging per-thread histograms gives the whole run's figures.
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        a.record(1_000).unwrap();
        b.record(9_000_000).unwrap();
        a.add(&b).unwrap();
        assert_eq!(Quantiles::of(&a).count, 2);
        assert!(Quantiles::of(&a).max >= 8990.0);
    }

    #[test]
    fn open_loop_schedule_is_steady_and_exact() {
        // 100 publishers at 10 msgs/s: 1,000 msgs in any 1 s window, and
        // no 10 ms slice holds more than its share (plus one for rounding).
        let (p, rate, start) = (100u64, 10.0, 5_000_000_000u64);
        let step = interval_ns(rate);
        assert_eq!(step, 100_000_000);
        let mut dues = Vec::new();
        for k in 0..p {
            let first = first_due(start, step, k, p);
            assert!(first >= start && first < start + step);
            dues.extend((0..50).map(|n| first + n * step));
        }
        let in_window = |a: u64, b: u64| dues.iter().filter(|&&d| d >= a && d < b).count();
        assert_eq!(in_window(start, start + 1_000_000_000), 1000);
        assert_eq!(in_window(start + 333_000_000, start + 1_333_000_000), 1000);
        for slice in 0..100u64 {
            let a = start + slice * 10_000_000;
            assert!(in_window(a, a + 10_000_000) <= 11, "slice {slice}");
        }
        assert_eq!(interval_ns(1e12), 1);
        assert_eq!(first_due(7, 10, 3, 0), 7 + 30);
    }

    #[test]
    fn rates_and_units() {
        assert_eq!(rate(500, 2.0), 250.0);
        assert_eq!(rate(5, 0.0), 0.0);
        assert_eq!(human(950.0), "950");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(4_560_000.0), "4.56M");
        assert_eq!(human_us(850.0), "850us");
        assert_eq!(human_us(1250.0), "1.25ms");
        assert_eq!(human_us(2_100_000.0), "2.10s");
    }
}
