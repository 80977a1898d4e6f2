//! `--state-file`: room states and server-wide bans across restarts, for a
//! standalone daemon.
//!
//! The format is JSON through serde, versioned:
//!
//! ```text
//! {"version":1,
//!  "rooms":[{"name":"#rust","topic":"...","topic_by":"alice","topic_time_ms":...,
//!            "modes":2,"ops":["alice"],"invitations":[{"account":"bob"},{"guest":"~eve"}],
//!            "bans":[{"mask":"nick:spam*","by":"alice","reason":"","until_ms":0}],
//!            "emptied_at_ms":...}],
//!  "server_bans":[{"mask":"ip:192.0.2.0/24","by":"root","reason":"...","until_ms":0}]}
//! ```
//!
//! JSON rather than a compact binary format: an operator can read it, fix
//! it by hand or feed it to `jq`, and serde_json was in the build already;
//! 10,000 bans are about a megabyte and serialize in milliseconds (see
//! docs/BENCHMARKS.md), which the chunked writer spreads over iterations.
//!
//! Loading happens once, at start: a file that cannot be read or does not
//! parse, a version other than 1, a mask, room name or mode the daemon
//! would refuse, or more bans than the bounds: [`StateFileError`] naming
//! the file, and the daemon exits 1. A missing file is a first start (its
//! directory must exist: writes need it).
//!
//! Writing is atomic: the bytes go to a temporary file in the same
//! directory, which is fsynced, renamed over the file, and the directory
//! fsynced, so a crash leaves the old file or the new one, never half of
//! one. [`StateWriter`] writes at most once per second after a change
//! (`mark_dirty`, `next_write_at`), and does it in steps the loop's timers
//! drive: each [`StateWriter::step`] serializes a bounded number of rooms
//! and bans, or writes a bounded number of bytes; the last step fsyncs and
//! renames. A room or ban changed while a write is under way marks the
//! writer dirty again, so the next write carries it: each write holds
//! every room as it was when the writer reached it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::codec::names::{valid_room, NameKey};

use super::bans::{Ban, BanSet, MAX_SERVER_BANS};
use super::masks::Mask;
use super::room_state::{
    Invitee, Modes, RoomState, RoomStates, MAX_GRANTS, MAX_INVITATIONS, MAX_TOPIC,
};

/// The format's version.
pub const VERSION: u32 = 1;
/// Least time between two writes, in ms.
pub const MIN_INTERVAL_MS: u64 = 1000;
/// Largest state file read at start.
pub const MAX_FILE: u64 = 1 << 30;

/// A state file that cannot be used at start (the daemon exits 1 with
/// this as its one line).
#[derive(Debug)]
pub struct StateFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub cause: String,
}

impl fmt::Display for StateFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state file {}: {}", self.path.display(), self.cause)
    }
}

impl std::error::Error for StateFileError {}

/// What a state file holds, ready to serve.
#[derive(Debug)]
pub struct Loaded {
    /// The rooms' states (every room empty: drop timers running from when
    /// each emptied, or from the load for a room that had members).
    pub rooms: RoomStates,
    /// The server-wide bans.
    pub server_bans: BanSet,
}

#[derive(Deserialize)]
struct VersionIn {
    version: u32,
}

#[derive(Deserialize)]
struct FileIn {
    #[serde(default)]
    rooms: Vec<RoomIn>,
    #[serde(default)]
    server_bans: Vec<BanIn>,
}

#[derive(Deserialize)]
struct RoomIn {
    name: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    topic_by: String,
    #[serde(default)]
    topic_time_ms: u64,
    #[serde(default)]
    modes: u16,
    #[serde(default)]
    ops: Vec<String>,
    #[serde(default)]
    invitations: Vec<Invitee>,
    #[serde(default)]
    bans: Vec<BanIn>,
    #[serde(default)]
    emptied_at_ms: Option<u64>,
}

#[derive(Deserialize)]
struct BanIn {
    mask: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    until_ms: u64,
}

/// Reads the state file at `path`, at `now_ms`, dropping what has expired
/// meanwhile (bans past their end, rooms empty for longer than `ttl_ms`).
pub fn load(path: &Path, now_ms: u64, ttl_ms: u64) -> Result<Loaded, StateFileError> {
    let fail = |cause: String| StateFileError {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            if !dir.is_dir() {
                return Err(fail(format!(
                    "its directory {} does not exist",
                    dir.display()
                )));
            }
            return Ok(Loaded {
                rooms: RoomStates::new(ttl_ms),
                server_bans: BanSet::new(MAX_SERVER_BANS),
            });
        }
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    parse(&bytes, now_ms, ttl_ms).map_err(fail)
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    if file.metadata()?.len() > MAX_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_FILE + 1), &mut bytes)?;
    Ok(bytes)
}

/// Parses a state file's bytes (see [`load`]); the error says what is
/// wrong and where.
pub fn parse(bytes: &[u8], now_ms: u64, ttl_ms: u64) -> Result<Loaded, String> {
    let version: VersionIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if version.version != VERSION {
        return Err(format!(
            "format version {} (this daemon reads version {VERSION})",
            version.version
        ));
    }
    let file: FileIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    let mut rooms = RoomStates::new(ttl_ms);
    let mut server_bans = BanSet::new(MAX_SERVER_BANS);
    for (i, ban) in file.server_bans.into_iter().enumerate() {
        let ban = ban_from(ban).map_err(|e| format!("server ban {i}: {e}"))?;
        if ban.until_ms != 0 && ban.until_ms <= now_ms {
            continue;
        }
        if server_bans.get(&ban.mask).is_some() {
            return Err(format!("server ban {i}: {} twice", ban.mask));
        }
        server_bans
            .insert(ban)
            .map_err(|e| format!("server bans: {e}"))?;
    }
    for room in file.rooms {
        let name = room.name.clone();
        let (key, state) = room_from(room, now_ms).map_err(|e| format!("room {name:?}: {e}"))?;
        if rooms.get(&key).is_some() {
            return Err(format!("room {name:?} twice"));
        }
        let emptied = state.emptied_at_ms.unwrap_or(now_ms);
        if emptied.saturating_add(ttl_ms) <= now_ms || state.is_stateless() {
            continue;
        }
        rooms.restore(
            key,
            RoomState {
                emptied_at_ms: Some(emptied),
                ..state
            },
        );
    }
    Ok(Loaded { rooms, server_bans })
}

fn ban_from(ban: BanIn) -> Result<Ban, String> {
    let mask: Mask = ban
        .mask
        .parse()
        .map_err(|e| format!("mask {:?}: {e}", ban.mask))?;
    Ok(Ban {
        mask,
        by: ban.by,
        reason: ban.reason,
        until_ms: ban.until_ms,
    })
}

fn room_from(room: RoomIn, now_ms: u64) -> Result<(NameKey, RoomState), String> {
    if !valid_room(&room.name) {
        return Err("not a valid room name".into());
    }
    let key = NameKey::new(&room.name).ok_or("not a valid room name")?;
    if room.topic.len() > MAX_TOPIC {
        return Err(format!("topic above {MAX_TOPIC} bytes"));
    }
    let modes = Modes::from_bits(room.modes).ok_or(format!("unknown modes {}", room.modes))?;
    if room.ops.len() > MAX_GRANTS || room.invitations.len() > MAX_INVITATIONS {
        return Err("more grants or invitations than a room holds".into());
    }
    let mut state = RoomState {
        topic: room.topic,
        topic_by: room.topic_by,
        topic_time_ms: room.topic_time_ms,
        modes,
        ops: room.ops.into_iter().collect(),
        invitations: room.invitations.into_iter().collect(),
        emptied_at_ms: room.emptied_at_ms,
        ..RoomState::default()
    };
    for (i, ban) in room.bans.into_iter().enumerate() {
        let ban = ban_from(ban).map_err(|e| format!("ban {i}: {e}"))?;
        if ban.until_ms != 0 && ban.until_ms <= now_ms {
            continue;
        }
        if state.bans.get(&ban.mask).is_some() {
            return Err(format!("ban {i}: {} twice", ban.mask));
        }
        state.bans.insert(ban).map_err(|e| format!("bans: {e}"))?;
    }
    Ok((key, state))
}

/// A mask written as its canonical text, without an allocation.
struct MaskText<'a>(&'a Mask);

impl Serialize for MaskText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

#[derive(Serialize)]
struct BanOut<'a> {
    mask: MaskText<'a>,
    by: &'a str,
    reason: &'a str,
    until_ms: u64,
}

impl<'a> From<&'a Ban> for BanOut<'a> {
    fn from(b: &'a Ban) -> BanOut<'a> {
        BanOut {
            mask: MaskText(&b.mask),
            by: &b.by,
            reason: &b.reason,
            until_ms: b.until_ms,
        }
    }
}

struct BansOut<'a>(&'a BanSet);

impl Serialize for BansOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.list().map(BanOut::from))
    }
}

#[derive(Serialize)]
struct RoomOut<'a> {
    name: &'a str,
    topic: &'a str,
    topic_by: &'a str,
    topic_time_ms: u64,
    modes: u16,
    ops: &'a std::collections::BTreeSet<String>,
    invitations: &'a std::collections::BTreeSet<Invitee>,
    bans: BansOut<'a>,
    emptied_at_ms: Option<u64>,
}

fn room_json(buf: &mut Vec<u8>, key: &NameKey, state: &RoomState) {
    let out = RoomOut {
        name: key.as_str(),
        topic: &state.topic,
        topic_by: &state.topic_by,
        topic_time_ms: state.topic_time_ms,
        modes: state.modes.bits(),
        ops: &state.ops,
        invitations: &state.invitations,
        bans: BansOut(&state.bans),
        emptied_at_ms: state.emptied_at_ms,
    };
    // Writing to a Vec cannot fail, and every value serializes.
    let _ = serde_json::to_writer(&mut *buf, &out);
}

/// The whole state as one file's bytes, at once (tests, the fuzz target,
/// a final write at shutdown).
pub fn to_bytes(rooms: &RoomStates, server_bans: &BanSet) -> Vec<u8> {
    let mut job = Serialize_::start(rooms);
    while !job.step(rooms, server_bans, usize::MAX) {}
    job.buf
}

/// Serializing in steps: the rooms by a snapshot of their names, then the
/// server bans from the last mask written.
#[allow(non_camel_case_types)]
struct Serialize_ {
    buf: Vec<u8>,
    keys: Vec<NameKey>,
    next_room: usize,
    rooms_done: bool,
    last_ban: Option<Mask>,
    any_ban: bool,
}

impl Serialize_ {
    fn start(rooms: &RoomStates) -> Serialize_ {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(format!("{{\"version\":{VERSION},\"rooms\":[").as_bytes());
        Serialize_ {
            buf,
            keys: rooms.iter().map(|(k, _)| *k).collect(),
            next_room: 0,
            rooms_done: false,
            last_ban: None,
            any_ban: false,
        }
    }

    /// Serializes about `budget` items (a room counts one plus its bans);
    /// true when the bytes are complete.
    fn step(&mut self, rooms: &RoomStates, server_bans: &BanSet, budget: usize) -> bool {
        let mut spent = 0usize;
        while !self.rooms_done {
            let Some(key) = self.keys.get(self.next_room) else {
                self.buf.extend_from_slice(b"],\"server_bans\":[");
                self.rooms_done = true;
                break;
            };
            if spent >= budget {
                return false;
            }
            // A room dropped since the snapshot is simply left out.
            if let Some(state) = rooms.get(key) {
                if self.buf.last() == Some(&b'}') {
                    self.buf.push(b',');
                }
                room_json(&mut self.buf, key, state);
                spent = spent.saturating_add(1 + state.bans.len());
            }
            self.next_room += 1;
        }
        let mut written = None;
        let mut stopped = false;
        for ban in server_bans.list_after(self.last_ban.as_ref()) {
            if spent >= budget {
                // A ban is left: the next step resumes after the last one
                // written, whatever changed in between.
                stopped = true;
                break;
            }
            if self.any_ban {
                self.buf.push(b',');
            }
            self.any_ban = true;
            let _ = serde_json::to_writer(&mut self.buf, &BanOut::from(ban));
            written = Some(&ban.mask);
            spent += 1;
        }
        if let Some(m) = written {
            self.last_ban = Some(m.clone());
        }
        if stopped {
            return false;
        }
        self.buf.extend_from_slice(b"]}\n");
        true
    }
}

/// Bounds on the work of one [`StateWriter::step`].
#[derive(Debug, Clone, Copy)]
pub struct StepBudget {
    /// Rooms plus bans serialized per step.
    pub items: usize,
    /// Bytes written per step.
    pub bytes: usize,
}

impl Default for StepBudget {
    /// Well under a millisecond of work each (see
    /// docs/BENCHMARKS.md, "Moderation").
    fn default() -> StepBudget {
        StepBudget {
            items: 500,
            bytes: 256 * 1024,
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now (clean, or not yet a second since the last write).
    Idle,
    /// Part of a write done; call again (next iteration).
    Working,
    /// A whole file written, of this many bytes.
    Written(usize),
}

/// Where a write is (for traces, metrics and the benchmark's profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No write under way (the next step may start one).
    Idle,
    /// Turning rooms and bans into bytes.
    Serializing,
    /// Writing the bytes to the temporary file.
    Writing,
    /// fsync of the temporary file.
    Syncing,
    /// Rename over the file, fsync of the directory.
    Committing,
}

enum Job {
    Serializing(Serialize_),
    Writing {
        file: File,
        buf: Vec<u8>,
        pos: usize,
    },
    Syncing {
        file: File,
        len: usize,
    },
    Committing {
        len: usize,
    },
}

/// Writes the state file atomically, at most once per second after a
/// change, in bounded steps (see the module doc).
pub struct StateWriter {
    path: PathBuf,
    tmp: PathBuf,
    dirty: bool,
    last_start_ms: Option<u64>,
    job: Option<Job>,
}

impl fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateWriter")
            .field("path", &self.path)
            .field("dirty", &self.dirty)
            .field("writing", &self.job.is_some())
            .finish()
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl StateWriter {
    /// A writer for `path` (its temporary file is `.NAME.tmp` beside it).
    pub fn new(path: &Path) -> StateWriter {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        StateWriter {
            path: path.to_path_buf(),
            tmp: parent_dir(path).join(format!(".{name}.tmp")),
            dirty: false,
            last_start_ms: None,
            job: None,
        }
    }

    /// What the next [`StateWriter::step`] would do with a write under way.
    pub fn phase(&self) -> Phase {
        match &self.job {
            None => Phase::Idle,
            Some(Job::Serializing(_)) => Phase::Serializing,
            Some(Job::Writing { .. }) => Phase::Writing,
            Some(Job::Syncing { .. }) => Phase::Syncing,
            Some(Job::Committing { .. }) => Phase::Committing,
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Something the file holds changed.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a change waits to be written.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// When the loop should call [`StateWriter::step`] next: `None` when
    /// clean and idle; `now` while a write is under way.
    pub fn next_write_at(&self, now_ms: u64) -> Option<u64> {
        if self.job.is_some() {
            return Some(now_ms);
        }
        if !self.dirty {
            return None;
        }
        Some(match self.last_start_ms {
            Some(last) => now_ms.max(last.saturating_add(MIN_INTERVAL_MS)),
            None => now_ms,
        })
    }

    /// One bounded step of a write (starting one when dirty and due). On
    /// an error the write is abandoned, the writer stays dirty, and the
    /// next try waits its second: the caller logs it.
    pub fn step(
        &mut self,
        now_ms: u64,
        rooms: &RoomStates,
        server_bans: &BanSet,
        budget: StepBudget,
    ) -> io::Result<Step> {
        let job = match self.job.take() {
            Some(job) => job,
            None => {
                if self.next_write_at(now_ms).is_none_or(|at| at > now_ms) {
                    return Ok(Step::Idle);
                }
                self.dirty = false;
                self.last_start_ms = Some(now_ms);
                Job::Serializing(Serialize_::start(rooms))
            }
        };
        match self.advance(job, rooms, server_bans, budget) {
            Ok((Some(job), _)) => {
                self.job = Some(job);
                Ok(Step::Working)
            }
            Ok((None, len)) => Ok(Step::Written(len)),
            Err(e) => {
                self.dirty = true;
                let _ = fs::remove_file(&self.tmp);
                Err(e)
            }
        }
    }

    fn advance(
        &self,
        job: Job,
        rooms: &RoomStates,
        server_bans: &BanSet,
        budget: StepBudget,
    ) -> io::Result<(Option<Job>, usize)> {
        Ok(match job {
            Job::Serializing(mut s) => {
                if !s.step(rooms, server_bans, budget.items.max(1)) {
                    return Ok((Some(Job::Serializing(s)), 0));
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&self.tmp)?;
                (
                    Some(Job::Writing {
                        file,
                        buf: s.buf,
                        pos: 0,
                    }),
                    0,
                )
            }
            Job::Writing {
                mut file,
                buf,
                mut pos,
            } => {
                let end = (pos + budget.bytes.max(1)).min(buf.len());
                file.write_all(&buf[pos..end])?;
                start_writeback(&file, pos, end - pos);
                pos = end;
                if pos < buf.len() {
                    (Some(Job::Writing { file, buf, pos }), 0)
                } else {
                    (
                        Some(Job::Syncing {
                            file,
                            len: buf.len(),
                        }),
                        0,
                    )
                }
            }
            Job::Syncing { file, len } => {
                // Blocks until the data is on disk; the write steps
                // started its writeback already, so this mostly waits for
                // what is in flight and the file's metadata.
                file.sync_all()?;
                (Some(Job::Committing { len }), 0)
            }
            Job::Committing { len } => {
                fs::rename(&self.tmp, &self.path)?;
                // The rename is durable once the directory is.
                File::open(parent_dir(&self.path))?.sync_all()?;
                (None, len)
            }
        })
    }

    /// Finishes any write under way and, if dirty, writes the whole state
    /// now (shutdown). Returns the bytes of the last file written.
    pub fn flush_all(
        &mut self,
        now_ms: u64,
        rooms: &RoomStates,
        server_bans: &BanSet,
    ) -> io::Result<Option<usize>> {
        let unlimited = StepBudget {
            items: usize::MAX,
            bytes: usize::MAX,
        };
        let mut written = None;
        // One pass for a write under way, one for the change after it.
        for _ in 0..2 {
            if self.job.is_none() && self.dirty {
                self.last_start_ms = None;
            }
            loop {
                match self.step(now_ms, rooms, server_bans, unlimited)? {
                    Step::Idle => break,
                    Step::Working => {}
                    Step::Written(n) => {
                        written = Some(n);
                        break;
                    }
                }
            }
        }
        Ok(written)
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now,
/// without waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the
/// final fsync then has little left to wait for, and the loop's stall at
/// the commit shrinks. Advice only: a failure changes nothing.
fn start_writeback(file: &File, offset: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range reads no memory of ours; the descriptor
        // is open for the duration of the call.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// The fuzz target's check (`fuzz/scenarios/state_file.rs`): any bytes
/// either fail to load with a message or load into a state that writes
/// back to bytes which load again to the same content.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    const NOW: u64 = 1_000_000;
    let Ok(loaded) = parse(data, NOW, u64::MAX / 4) else {
        return;
    };
    let bytes = to_bytes(&loaded.rooms, &loaded.server_bans);
    let again = parse(&bytes, NOW, u64::MAX / 4).expect("what was written loads");
    assert_eq!(
        to_bytes(&again.rooms, &again.server_bans).len(),
        bytes.len()
    );
    assert_eq!(again.rooms.len(), loaded.rooms.len());
    assert_eq!(again.server_bans.len(), loaded.server_bans.len());
    for (key, state) in loaded.rooms.iter() {
        let other = again.rooms.get(key).expect("room kept");
        assert_eq!(other.topic, state.topic);
        assert_eq!(other.modes, state.modes);
        assert_eq!(other.ops, state.ops);
        assert_eq!(other.invitations, state.invitations);
        assert!(other.bans.list().eq(state.bans.list()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> NameKey {
        NameKey::new(room).unwrap()
    }

    fn ban(mask: &str, until_ms: u64) -> Ban {
        Ban {
            mask: mask.parse().unwrap(),
            by: "root".into(),
            reason: "spam \"quoted\"".into(),
            until_ms,
        }
    }

    fn sample() -> (RoomStates, BanSet) {
        let mut rooms = RoomStates::new(10_000);
        let r = rooms.entry(key("#Rust"));
        r.set_topic("borrowck", "alice", 7).unwrap();
        r.change_modes(Modes::INVITE_ONLY, 0).unwrap();
        r.grant("alice").unwrap();
        r.invite(Invitee::Account("bob".into())).unwrap();
        r.invite(Invitee::guest("~Eve")).unwrap();
        rooms.ban(key("#rust"), ban("nick:spam*", 0)).unwrap();
        rooms
            .ban(key("#rust"), ban("ip:10.0.0.0/8", 5_000))
            .unwrap();
        rooms.entry(key("#other")).grant("zed").unwrap();
        rooms.room_emptied(&key("#other"), 100);
        let mut server = BanSet::new(MAX_SERVER_BANS);
        server.insert(ban("ip:2001:db8::/48", 0)).unwrap();
        server.insert(ban("account:mallory", 9_000)).unwrap();
        (rooms, server)
    }

    #[test]
    fn what_is_written_loads_back() {
        let (rooms, server) = sample();
        let bytes = to_bytes(&rooms, &server);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"version\":1,"), "{text}");
        let loaded = parse(&bytes, 1_000, 10_000).unwrap();
        let r = loaded.rooms.get(&key("#rust")).unwrap();
        assert_eq!(r.topic, "borrowck");
        assert_eq!(r.modes.bits(), Modes::INVITE_ONLY);
        assert!(r.ops.contains("alice"));
        assert!(r.is_invited(Some("bob"), "bob") && r.is_invited(None, "~eve"));
        assert_eq!(r.bans.len(), 2);
        assert_eq!(loaded.server_bans.len(), 2);
        // Every room is empty after a restart: the one that had members
        // runs its TTL from the load.
        assert_eq!(r.emptied_at_ms, Some(1_000));
        assert_eq!(
            loaded.rooms.get(&key("#other")).unwrap().emptied_at_ms,
            Some(100)
        );
        // Expired meanwhile: the timed bans, and #other's state.
        let later = parse(&bytes, 10_100, 10_000).unwrap();
        assert_eq!(later.server_bans.len(), 1);
        assert_eq!(later.rooms.get(&key("#rust")).unwrap().bans.len(), 1);
        assert!(later.rooms.get(&key("#other")).is_none());
    }

    #[test]
    fn corrupt_files_say_what_is_wrong() {
        let bad = |text: &str| parse(text.as_bytes(), 0, 1000).unwrap_err();
        assert!(bad("").contains("not a state file"));
        assert!(bad("{\"version\":1,\"rooms\":[").contains("not a state file"));
        assert!(bad("{\"version\":2}").contains("version 2"));
        assert!(bad("{\"version\":1,\"rooms\":[{\"name\":\"nope\"}]}").contains("room name"));
        assert!(
            bad("{\"version\":1,\"rooms\":[{\"name\":\"#a\",\"modes\":8,\"ops\":[\"x\"]}]}")
                .contains("modes")
        );
        let e = bad("{\"version\":1,\"server_bans\":[{\"mask\":\"host:x\"}]}");
        assert!(e.contains("server ban 0") && e.contains("host:x"), "{e}");
        let e =
            bad("{\"version\":1,\"server_bans\":[{\"mask\":\"nick:a\"},{\"mask\":\"NICK:A\"}]}");
        assert!(e.contains("twice"), "{e}");
        assert!(parse(b"{\"version\":1}", 0, 1).is_ok());
    }

    #[test]
    fn load_names_the_file_and_a_missing_one_is_a_first_start() {
        let dir = std::env::temp_dir().join(format!("muxchat-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let first = load(&path, 0, 1000).unwrap();
        assert!(first.rooms.is_empty() && first.server_bans.is_empty());
        fs::write(&path, "garbage").unwrap();
        let e = load(&path, 0, 1000).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        let e = load(&dir.join("no/such/dir/state.json"), 0, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_writes_atomically_at_most_once_a_second_in_steps() {
        let dir = std::env::temp_dir().join(format!("muxchat-statew-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let (rooms, mut server) = sample();
        for i in 0..100 {
            server.insert(ban(&format!("nick:n{i}"), 0)).unwrap();
        }
        let mut w = StateWriter::new(&path);
        let tiny = StepBudget {
            items: 7,
            bytes: 500,
        };
        assert_eq!(w.next_write_at(0), None);
        assert_eq!(w.step(0, &rooms, &server, tiny).unwrap(), Step::Idle);
        w.mark_dirty();
        assert_eq!(w.next_write_at(5), Some(5));
        let mut steps = 0;
        let len = loop {
            steps += 1;
            match w.step(5, &rooms, &server, tiny).unwrap() {
                Step::Working => assert!(!path.exists(), "renamed before the end"),
                Step::Written(n) => break n,
                Step::Idle => panic!("idle mid-write"),
            }
        };
        assert!(steps > 10, "{steps} steps");
        assert_eq!(fs::read(&path).unwrap(), to_bytes(&rooms, &server));
        assert_eq!(len, fs::metadata(&path).unwrap().len() as usize);
        assert!(!dir.join(".state.json.tmp").exists());
        // The next change waits for its second.
        w.mark_dirty();
        assert_eq!(w.next_write_at(500), Some(1005));
        assert_eq!(w.step(500, &rooms, &server, tiny).unwrap(), Step::Idle);
        server.insert(ban("nick:late", 0)).unwrap();
        assert!(w.flush_all(600, &rooms, &server).unwrap().is_some());
        let loaded = load(&path, 600, 10_000).unwrap();
        assert_eq!(loaded.server_bans.len(), server.len());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ban_lifted_mid_write_is_not_written_twice_or_lost_ordering() {
        let (rooms, mut server) = sample();
        for i in 0..50 {
            server.insert(ban(&format!("nick:n{i:02}"), 0)).unwrap();
        }
        let mut s = Serialize_::start(&rooms);
        assert!(!s.step(&rooms, &server, 20));
        server.remove(&"nick:n40".parse().unwrap()).unwrap();
        server.insert(ban("nick:n00a", 0)).unwrap();
        while !s.step(&rooms, &server, 20) {}
        let loaded = parse(&s.buf, 0, 10_000).unwrap();
        assert_eq!(loaded.server_bans.len(), server.len() - 1);
    }

    #[test]
    fn every_budget_writes_the_same_bytes() {
        let (rooms, mut server) = sample();
        for i in 0..30 {
            server.insert(ban(&format!("nick:n{i:02}"), 0)).unwrap();
        }
        let whole = to_bytes(&rooms, &server);
        for budget in 1..40 {
            let mut s = Serialize_::start(&rooms);
            let mut steps = 1;
            while !s.step(&rooms, &server, budget) {
                steps += 1;
            }
            assert_eq!(s.buf, whole, "budget {budget}");
            assert!(
                steps >= (server.len() + 2) / budget,
                "budget {budget}: {steps} steps"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn fuzz_check_holds(text in "\\PC{0,200}") {
            fuzz_check(text.as_bytes());
            fuzz_check(format!("{{\"version\":1,\"server_bans\":[{{\"mask\":\"nick:{text}\"}}]}}").as_bytes());
        }
    }
}
