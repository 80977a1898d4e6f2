//! One room's held messages as bytes: a ring of encoded frames and the
//! index of where each starts. Apart from [`super::History`] so the
//! byte-level invariants (wrapping positions, capacity kept near need)
//! are read and tested on their own.

use std::collections::VecDeque;

use super::INDEX_BYTES;

/// One room incarnation's held messages.
///
/// Invariants: `starts.len()` messages are held, of seqs `first_seq ..
/// first_seq + starts.len()`; message `i`'s frame occupies
/// `bytes[starts[i] - base .. next]` (positions wrap in `u32`), where
/// `next` is `starts[i + 1]` or `base + bytes.len()`; `bytes` holds
/// nothing else. `prev`/`next` link the ring into the LRU list exactly
/// while it holds a message.
#[derive(Debug)]
pub(super) struct Ring {
    pub(super) bytes: ByteRing,
    pub(super) starts: VecDeque<u32>,
    /// Position of `bytes[0]`.
    pub(super) base: u32,
    pub(super) first_seq: u64,
    pub(super) prev: usize,
    pub(super) next: usize,
}

impl Ring {
    pub(super) fn last_seq(&self) -> u64 {
        self.first_seq + self.starts.len() as u64 - 1
    }

    /// Heap bytes its buffers hold (capacities).
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.starts.capacity() * INDEX_BYTES
    }

    /// Offset in `bytes` where message `i` starts (`i == len`: the end).
    pub(super) fn offset(&self, i: usize) -> usize {
        match self.starts.get(i) {
            Some(&p) => p.wrapping_sub(self.base) as usize,
            None => self.bytes.len(),
        }
    }

    /// Drops the oldest message; returns the bytes it was charged.
    pub(super) fn pop_oldest(&mut self) -> usize {
        let len = self.offset(1);
        self.starts.pop_front();
        self.bytes.drain_front(len);
        self.base = self.base.wrapping_add(len as u32);
        self.first_seq += 1;
        if self.starts.is_empty() {
            // Give the memory back: a room that holds nothing costs nothing.
            self.bytes = ByteRing::default();
            self.starts = VecDeque::new();
        } else if self.bytes.capacity() > 2 * self.bytes.len() + 4096 {
            self.bytes
                .shrink_to(self.bytes.len() + self.bytes.len() / 4);
        }
        len + INDEX_BYTES
    }

    /// Makes room for `n` more bytes without doubling: grow by half while
    /// filling up, but never far past what `per_room` frames of the
    /// current average size need; once full, by an eighth.
    pub(super) fn reserve(&mut self, n: usize, per_room: usize) {
        let len = self.bytes.len();
        if self.bytes.capacity() - len >= n {
            return;
        }
        let held = self.starts.len();
        let step = if held + 1 >= per_room || held == 0 {
            len / 8
        } else {
            let avg = len / held;
            (len / 2).min(avg * (per_room - held))
        };
        self.bytes.reserve_exact(n.max(step));
    }
}

/// A byte ring buffer: `len` bytes starting at `head`, wrapping at the end
/// of `buf`. `VecDeque<u8>` did the same job at 3x the cost per store: its
/// generic `extend` pays for a capacity check and wrap logic per field,
/// where a frame is nine small writes into space reserved once.
///
/// Invariants: `buf.len()` is the capacity (all of it initialised, so a
/// write is a plain copy); `head < buf.len()` unless `buf` is empty;
/// `len <= buf.len()`.
#[derive(Debug, Default)]
pub(super) struct ByteRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl ByteRing {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends `b`; the caller has reserved room for it.
    #[inline(always)]
    pub(super) fn write(&mut self, b: &[u8]) {
        let cap = self.buf.len();
        debug_assert!(self.len + b.len() <= cap);
        let mut tail = self.head + self.len;
        if tail >= cap {
            tail -= cap;
        }
        if tail + b.len() <= cap {
            self.buf[tail..tail + b.len()].copy_from_slice(b);
        } else {
            let (first, second) = b.split_at(cap - tail);
            self.buf[tail..].copy_from_slice(first);
            self.buf[..second.len()].copy_from_slice(second);
        }
        self.len += b.len();
    }

    /// Drops the first `n` bytes.
    pub(super) fn drain_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        self.head += n;
        if self.head >= self.buf.len() {
            self.head -= self.buf.len();
        }
    }

    /// Bytes `a..b` of the ring, as at most two slices.
    pub(super) fn range(&self, a: usize, b: usize) -> (&[u8], &[u8]) {
        debug_assert!(a <= b && b <= self.len);
        let cap = self.buf.len();
        let first = (cap - self.head).min(self.len);
        let front = &self.buf[self.head..self.head + first];
        let back = &self.buf[..self.len - first];
        if b <= first {
            (&front[a..b], &[])
        } else if a >= first {
            (&back[a - first..b - first], &[])
        } else {
            (&front[a..], &back[..b - first])
        }
    }

    /// Moves the bytes into a buffer of exactly `cap` bytes (>= len).
    pub(super) fn set_capacity(&mut self, cap: usize) {
        let mut buf = Vec::with_capacity(cap);
        let (a, b) = self.range(0, self.len);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        buf.resize(cap, 0);
        self.buf = buf;
        self.head = 0;
    }

    /// Ensures room for `additional` more bytes, growing to exactly that.
    pub(super) fn reserve_exact(&mut self, additional: usize) {
        if self.buf.len() - self.len < additional {
            self.set_capacity(self.len + additional);
        }
    }

    pub(super) fn shrink_to(&mut self, cap: usize) {
        if cap < self.buf.len() {
            self.set_capacity(cap.max(self.len));
        }
    }
}

/// Appends a `str` field as the codec does: a string longer than a u16 can
/// say is cut at the last character boundary that fits.
pub(super) fn put_str(out: &mut ByteRing, s: &str) {
    // `s` was cut by `fit_str` when the frame was sized.
    out.write(&(s.len() as u16).to_be_bytes());
    out.write(s.as_bytes());
}

pub(super) fn fit_str(s: &str) -> &str {
    let mut len = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    &s[..len]
}
