//! The state file's writer: each part at most once per second after a
//! change, one file at a time, in bounded steps the loop's timers drive
//! (serialize a bounded number of rooms or bans, or write a bounded number
//! of bytes; the last step fsyncs and renames), so no write stalls the
//! loop. The format and the loading are the parent module's.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::super::bans::BanSet;
use super::super::room_state::RoomStates;
use super::*;

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

/// One of the two files and when it was last written.
#[derive(Debug)]
struct PartFile {
    path: PathBuf,
    tmp: PathBuf,
    dirty: bool,
    last_start_ms: Option<u64>,
}

impl PartFile {
    fn new(path: PathBuf) -> PartFile {
        PartFile {
            tmp: tmp_path(&path),
            path,
            dirty: false,
            last_start_ms: None,
        }
    }

    /// When this part's next write may start; `None` when clean.
    fn due_at(&self, now_ms: u64) -> Option<u64> {
        if !self.dirty {
            return None;
        }
        Some(match self.last_start_ms {
            Some(last) => now_ms.max(last.saturating_add(MIN_INTERVAL_MS)),
            None => now_ms,
        })
    }
}

/// Writes the state file and the server-wide bans' file atomically, each
/// at most once per second after a change to it, one at a time, in
/// bounded steps (see the module doc).
pub struct StateWriter {
    /// Indexed by [`Part`].
    parts: [PartFile; 2],
    /// The write under way and its part.
    job: Option<(Part, Job)>,
}

impl fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateWriter")
            .field("path", &self.parts[0].path)
            .field("rooms_dirty", &self.parts[0].dirty)
            .field("server_bans_dirty", &self.parts[1].dirty)
            .field("writing", &self.job.as_ref().map(|(p, _)| *p))
            .finish()
    }
}

pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.tmp` beside `path`.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    parent_dir(path).join(format!(".{name}.tmp"))
}

impl StateWriter {
    /// A writer for `path` and `path.server-bans` (their temporary files
    /// are `.NAME.tmp` beside them).
    pub fn new(path: &Path) -> StateWriter {
        StateWriter {
            parts: [
                PartFile::new(path.to_path_buf()),
                PartFile::new(server_bans_path(path)),
            ],
            job: None,
        }
    }

    /// What the next [`StateWriter::step`] would do with a write under way.
    pub fn phase(&self) -> Phase {
        match &self.job {
            None => Phase::Idle,
            Some((_, Job::Serializing(_))) => Phase::Serializing,
            Some((_, Job::Writing { .. })) => Phase::Writing,
            Some((_, Job::Syncing { .. })) => Phase::Syncing,
            Some((_, Job::Committing { .. })) => Phase::Committing,
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.parts[Part::Rooms as usize].path
    }

    /// The file of `part`.
    pub fn path_of(&self, part: Part) -> &Path {
        &self.parts[part as usize].path
    }

    /// The part whose write is under way, if any.
    pub fn writing(&self) -> Option<Part> {
        self.job.as_ref().map(|(p, _)| *p)
    }

    /// Something both files hold changed (or may have: tests, benches).
    pub fn mark_dirty(&mut self) {
        self.mark_rooms_dirty();
        self.mark_server_bans_dirty();
    }

    /// A room's state changed (or was dropped).
    pub fn mark_rooms_dirty(&mut self) {
        self.parts[Part::Rooms as usize].dirty = true;
    }

    /// The server-wide bans changed.
    pub fn mark_server_bans_dirty(&mut self) {
        self.parts[Part::ServerBans as usize].dirty = true;
    }

    /// Whether a change waits to be written.
    pub fn is_dirty(&self) -> bool {
        self.parts.iter().any(|p| p.dirty)
    }

    /// When the loop should call [`StateWriter::step`] next: `None` when
    /// clean and idle; `now` while a write is under way.
    pub fn next_write_at(&self, now_ms: u64) -> Option<u64> {
        if self.job.is_some() {
            return Some(now_ms);
        }
        self.parts.iter().filter_map(|p| p.due_at(now_ms)).min()
    }

    /// One bounded step of a write (starting one, of the part due first,
    /// when one is dirty and due). On an error the write is abandoned,
    /// its part stays dirty, and the next try waits its second: the
    /// caller logs it.
    pub fn step(
        &mut self,
        now_ms: u64,
        rooms: &RoomStates,
        server_bans: &BanSet,
        budget: StepBudget,
    ) -> io::Result<Step> {
        let (part, job) = match self.job.take() {
            Some(job) => job,
            None => {
                let due = [Part::Rooms, Part::ServerBans]
                    .into_iter()
                    .filter_map(|p| Some((self.parts[p as usize].due_at(now_ms)?, p)))
                    .min_by_key(|(at, _)| *at);
                let Some((_, part)) = due.filter(|(at, _)| *at <= now_ms) else {
                    return Ok(Step::Idle);
                };
                let file = &mut self.parts[part as usize];
                file.dirty = false;
                file.last_start_ms = Some(now_ms);
                (part, Job::Serializing(Serialize_::start(part, rooms)))
            }
        };
        let file = &self.parts[part as usize];
        match advance(file, job, rooms, server_bans, budget) {
            Ok((Some(job), _)) => {
                self.job = Some((part, job));
                Ok(Step::Working)
            }
            Ok((None, len)) => Ok(Step::Written(len)),
            Err(e) => {
                let file = &mut self.parts[part as usize];
                file.dirty = true;
                let _ = fs::remove_file(&file.tmp);
                Err(e)
            }
        }
    }

    /// Finishes any write under way and writes every dirty part now
    /// (shutdown). Returns the bytes of the last file written.
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
        // The write under way, then each part (bounded: three writes).
        for _ in 0..3 {
            if self.job.is_none() {
                for p in &mut self.parts {
                    p.last_start_ms = None;
                }
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

fn advance(
    file: &PartFile,
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
            let out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&file.tmp)?;
            (
                Some(Job::Writing {
                    file: out,
                    buf: s.buf,
                    pos: 0,
                }),
                0,
            )
        }
        Job::Writing {
            file: mut out,
            buf,
            mut pos,
        } => {
            let end = (pos + budget.bytes.max(1)).min(buf.len());
            out.write_all(&buf[pos..end])?;
            start_writeback(&out, pos, end - pos);
            pos = end;
            if pos < buf.len() {
                (
                    Some(Job::Writing {
                        file: out,
                        buf,
                        pos,
                    }),
                    0,
                )
            } else {
                (
                    Some(Job::Syncing {
                        file: out,
                        len: buf.len(),
                    }),
                    0,
                )
            }
        }
        Job::Syncing { file: out, len } => {
            // Blocks until the data is on disk; the write steps started
            // its writeback already, so this mostly waits for what is in
            // flight and the file's metadata.
            out.sync_all()?;
            (Some(Job::Committing { len }), 0)
        }
        Job::Committing { len } => {
            fs::rename(&file.tmp, &file.path)?;
            // The rename is durable once the directory is.
            File::open(parent_dir(&file.path))?.sync_all()?;
            (None, len)
        }
    })
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
