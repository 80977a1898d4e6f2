//! `--state-file`: room states and server-wide bans across restarts, for a
//! standalone daemon.
//!
//! Two files, JSON through serde, each with a version: the state file
//! itself holds the rooms, and `FILE.server-bans` beside it holds the
//! server-wide bans:
//!
//! ```text
//! FILE:             {"version":2,
//!                    "rooms":[{"name":"#rust","topic":"...","topic_by":"alice","topic_time_ms":...,
//!                              "modes":2,"ops":["alice"],"invitations":[{"account":"bob"},{"guest":"~eve"}],
//!                              "bans":[{"mask":"nick:spam*","by":"alice","reason":"","until_ms":0}],
//!                              "emptied_at_ms":...}]}
//! FILE.server-bans: {"version":2,
//!                    "server_bans":[{"mask":"ip:192.0.2.0/24","by":"root","reason":"...","until_ms":0}]}
//! ```
//!
//! Two files because the parts change at different rates: rooms change
//! with every account that creates a room (its creator's OP grant) and
//! every room that empties, server-wide bans with an administrator's BAN.
//! In one file every room change rewrote up to 200,000 server-wide bans
//! (about 10 MB at 100,000); now each part is written only when it changed
//! (docs/BENCHMARKS.md, "Identity and moderation").
//!
//! Version 1 was one file with both parts (`"rooms"` and `"server_bans"`).
//! It still loads, and is migrated at once, before the daemon serves:
//! `FILE.server-bans` is written first, then `FILE` as version 2, so a
//! crash between the two leaves the version-1 file, which is read whole
//! again (a version-1 file ignores any `FILE.server-bans` beside it).
//!
//! JSON rather than a compact binary format: an operator can read it, fix
//! it by hand or feed it to `jq`, and serde_json was in the build already;
//! 10,000 bans are about a megabyte and serialize in milliseconds (see
//! docs/BENCHMARKS.md), which the chunked writer spreads over iterations.
//!
//! Loading happens once, at start: a file that cannot be read or does not
//! parse, an unknown version, a mask, room name or mode the daemon would
//! refuse, more bans than the bounds, or a part in the other part's file:
//! [`StateFileError`] naming the file, and the daemon exits 1. A missing
//! file is an empty part (both missing: a first start; the directory must
//! exist: writes need it).
//!
//! Writing is atomic, per file: the bytes go to a temporary file in the
//! same directory, which is fsynced, renamed over the file, and the
//! directory fsynced, so a crash leaves the old file or the new one, never
//! half of one. [`StateWriter`] writes each part at most once per second
//! after a change to it (`mark_rooms_dirty`, `mark_server_bans_dirty`,
//! `next_write_at`), one file at a time, in steps the loop's timers drive:
//! each [`StateWriter::step`] serializes a bounded number of rooms and
//! bans, or writes a bounded number of bytes; the last step fsyncs and
//! renames. A part changed while its write is under way is marked dirty
//! again, so the next write carries it: each write holds every room (or
//! ban) as it was when the writer reached it.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::codec::names::{valid_room, NameKey};

use super::bans::{Ban, BanSet, MAX_SERVER_BANS};
use super::masks::Mask;
use super::room_state::{
    Invitee, Modes, RoomState, RoomStates, MAX_GRANTS, MAX_INVITATIONS, MAX_TOPIC,
};

mod writer;
pub use writer::*;
use writer::{parent_dir, tmp_path};

/// The format's version (two files: the rooms, the server-wide bans).
pub const VERSION: u32 = 2;
/// The first version: one file with both parts (still read, and migrated).
pub const VERSION_1: u32 = 1;
/// Least time between two writes of one part, in ms.
pub const MIN_INTERVAL_MS: u64 = 1000;
/// Largest state file read at start.
pub const MAX_FILE: u64 = 1 << 30;
/// What the server-wide bans' file adds to the state file's name.
pub const SERVER_BANS_SUFFIX: &str = ".server-bans";

/// The file beside `path` that holds the server-wide bans.
pub fn server_bans_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SERVER_BANS_SUFFIX);
    PathBuf::from(name)
}

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

/// Reads the state file at `path` and the server-wide bans' file beside
/// it, at `now_ms`, dropping what has expired meanwhile (bans past their
/// end, rooms empty for longer than `ttl_ms`). A version-1 file is
/// migrated to version 2 before this returns.
pub fn load(path: &Path, now_ms: u64, ttl_ms: u64) -> Result<Loaded, StateFileError> {
    let fail = |path: &Path, cause: String| StateFileError {
        path: path.to_path_buf(),
        cause,
    };
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(fail(
            path,
            format!("its directory {} does not exist", dir.display()),
        ));
    }
    let (version, mut loaded) = match read_part(path, now_ms, ttl_ms)? {
        Some((VERSION_1, loaded)) => {
            migrate(path, &loaded)?;
            return Ok(loaded);
        }
        Some(part) => part,
        None => (VERSION, empty(ttl_ms)),
    };
    if !loaded.server_bans.is_empty() {
        return Err(fail(
            path,
            format!(
                "server_bans in a version-{version} state file (they belong in {})",
                server_bans_path(path).display()
            ),
        ));
    }
    let bans_path = server_bans_path(path);
    if let Some((version, bans)) = read_part(&bans_path, now_ms, ttl_ms)? {
        if version == VERSION_1 || !bans.rooms.is_empty() {
            return Err(fail(
                &bans_path,
                format!("a server-wide bans file holds version {VERSION} and no rooms"),
            ));
        }
        loaded.server_bans = bans.server_bans;
    }
    Ok(loaded)
}

fn empty(ttl_ms: u64) -> Loaded {
    Loaded {
        rooms: RoomStates::new(ttl_ms),
        server_bans: BanSet::new(MAX_SERVER_BANS),
    }
}

/// One file's version and content; `None` when it does not exist.
fn read_part(
    path: &Path,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Option<(u32, Loaded)>, StateFileError> {
    let fail = |cause: String| StateFileError {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    parse_versioned(&bytes, now_ms, ttl_ms)
        .map(Some)
        .map_err(fail)
}

/// A version-1 file as the two files of version 2: the server-wide bans
/// first, so that a crash before the rename of `path` leaves the whole
/// version-1 file in place.
fn migrate(path: &Path, loaded: &Loaded) -> Result<(), StateFileError> {
    let bans_path = server_bans_path(path);
    for (file, bytes) in [
        (&bans_path, server_bans_bytes(&loaded.server_bans)),
        (&path.to_path_buf(), rooms_bytes(&loaded.rooms)),
    ] {
        write_atomically(file, &bytes).map_err(|e| StateFileError {
            path: file.clone(),
            cause: format!("cannot write it while migrating from version {VERSION_1}: {e}"),
        })?;
    }
    log::info!(
        "state file {}: migrated from version {VERSION_1} to {VERSION} (server-wide bans now in {})",
        path.display(),
        bans_path.display()
    );
    Ok(())
}

/// `bytes` as the whole of `path`: temporary file, fsync, rename, fsync of
/// the directory (at start only: the loop writes in steps).
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(parent_dir(path))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// Parses one file's bytes, of either version and either part (see
/// [`load`]); the error says what is wrong and where.
pub fn parse(bytes: &[u8], now_ms: u64, ttl_ms: u64) -> Result<Loaded, String> {
    parse_versioned(bytes, now_ms, ttl_ms).map(|(_, loaded)| loaded)
}

/// [`parse`], with the file's version.
fn parse_versioned(bytes: &[u8], now_ms: u64, ttl_ms: u64) -> Result<(u32, Loaded), String> {
    let version: VersionIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if version.version != VERSION && version.version != VERSION_1 {
        return Err(format!(
            "format version {} (this daemon reads versions {VERSION_1} and {VERSION})",
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
    Ok((version.version, Loaded { rooms, server_bans }))
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

/// Which file a write is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The state file: every room's state.
    Rooms = 0,
    /// `FILE.server-bans`: the server-wide bans.
    ServerBans = 1,
}

/// The rooms' file's bytes, at once (tests, the fuzz target, migration).
pub fn rooms_bytes(rooms: &RoomStates) -> Vec<u8> {
    whole(Part::Rooms, rooms, &BanSet::new(0))
}

/// The server-wide bans' file's bytes, at once.
pub fn server_bans_bytes(server_bans: &BanSet) -> Vec<u8> {
    whole(Part::ServerBans, &RoomStates::new(0), server_bans)
}

fn whole(part: Part, rooms: &RoomStates, server_bans: &BanSet) -> Vec<u8> {
    let mut job = Serialize_::start(part, rooms);
    while !job.step(rooms, server_bans, usize::MAX) {}
    job.buf
}

/// Serializing one part in steps: the rooms by a snapshot of their
/// names, or the server bans from the last mask written.
#[allow(non_camel_case_types)]
struct Serialize_ {
    buf: Vec<u8>,
    part: Part,
    keys: Vec<NameKey>,
    next_room: usize,
    last_ban: Option<Mask>,
    any_ban: bool,
}

impl Serialize_ {
    fn start(part: Part, rooms: &RoomStates) -> Serialize_ {
        let mut buf = Vec::with_capacity(4096);
        let (field, keys) = match part {
            Part::Rooms => ("rooms", rooms.iter().map(|(k, _)| *k).collect()),
            Part::ServerBans => ("server_bans", Vec::new()),
        };
        buf.extend_from_slice(format!("{{\"version\":{VERSION},\"{field}\":[").as_bytes());
        Serialize_ {
            buf,
            part,
            keys,
            next_room: 0,
            last_ban: None,
            any_ban: false,
        }
    }

    /// Serializes about `budget` items (a room counts one plus its bans);
    /// true when the bytes are complete.
    fn step(&mut self, rooms: &RoomStates, server_bans: &BanSet, budget: usize) -> bool {
        match self.part {
            Part::Rooms => self.step_rooms(rooms, budget),
            Part::ServerBans => self.step_bans(server_bans, budget),
        }
    }

    fn step_rooms(&mut self, rooms: &RoomStates, budget: usize) -> bool {
        let mut spent = 0usize;
        while let Some(key) = self.keys.get(self.next_room) {
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
        self.buf.extend_from_slice(b"]}\n");
        true
    }

    fn step_bans(&mut self, server_bans: &BanSet, budget: usize) -> bool {
        let mut written = None;
        let mut stopped = false;
        for (spent, ban) in server_bans.list_after(self.last_ban.as_ref()).enumerate() {
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

/// The fuzz target's check (`fuzz/scenarios/state_file.rs`): any bytes,
/// read as a file of either version and either part, either fail to load
/// with a message or load into a state that writes back, as the two
/// version-2 files, to bytes which load again to the same content, each
/// file holding its own part only.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    const NOW: u64 = 1_000_000;
    let Ok(loaded) = parse(data, NOW, u64::MAX / 4) else {
        return;
    };
    let rooms = rooms_bytes(&loaded.rooms);
    let bans = server_bans_bytes(&loaded.server_bans);
    let (v, again) = parse_versioned(&rooms, NOW, u64::MAX / 4).expect("the rooms' file loads");
    assert_eq!(v, VERSION);
    assert!(again.server_bans.is_empty());
    let (v, again_bans) =
        parse_versioned(&bans, NOW, u64::MAX / 4).expect("the server bans' file loads");
    assert_eq!(v, VERSION);
    assert!(again_bans.rooms.is_empty());
    assert_eq!(rooms_bytes(&again.rooms).len(), rooms.len());
    assert_eq!(server_bans_bytes(&again_bans.server_bans), bans);
    assert_eq!(again.rooms.len(), loaded.rooms.len());
    assert!(again_bans.server_bans.list().eq(loaded.server_bans.list()));
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
mod tests;
