//! The state file's unit tests: what is written loads back, corrupt and
//! version-1 files, the writer's steps and atomicity. Kept beside the
//! format so the parser and serializer stay short enough to read whole.

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

/// Both parts in one version-1 file, as the first daemons wrote it.
fn version_1_bytes(rooms: &RoomStates, server: &BanSet) -> Vec<u8> {
    let rooms = String::from_utf8(rooms_bytes(rooms)).unwrap();
    let bans = String::from_utf8(server_bans_bytes(server)).unwrap();
    let rooms = rooms.trim_end().strip_suffix('}').unwrap();
    let bans = bans.split_once(',').unwrap().1;
    format!(
        "{},{bans}",
        rooms.replacen("\"version\":2", "\"version\":1", 1)
    )
    .into_bytes()
}

#[test]
fn what_is_written_loads_back() {
    let (rooms, server) = sample();
    let text = String::from_utf8(rooms_bytes(&rooms)).unwrap();
    assert!(text.starts_with("{\"version\":2,\"rooms\":["), "{text}");
    assert!(!text.contains("server_bans"), "{text}");
    let text = String::from_utf8(server_bans_bytes(&server)).unwrap();
    assert!(
        text.starts_with("{\"version\":2,\"server_bans\":["),
        "{text}"
    );
    let bytes = version_1_bytes(&rooms, &server);
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
    assert!(bad("{\"version\":3}").contains("version 3"));
    assert!(bad("{\"version\":1,\"rooms\":[{\"name\":\"nope\"}]}").contains("room name"));
    assert!(
        bad("{\"version\":1,\"rooms\":[{\"name\":\"#a\",\"modes\":8,\"ops\":[\"x\"]}]}")
            .contains("modes")
    );
    let e = bad("{\"version\":1,\"server_bans\":[{\"mask\":\"host:x\"}]}");
    assert!(e.contains("server ban 0") && e.contains("host:x"), "{e}");
    let e = bad("{\"version\":1,\"server_bans\":[{\"mask\":\"nick:a\"},{\"mask\":\"NICK:A\"}]}");
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
    // A server-wide ban changed: its file alone is written.
    w.mark_server_bans_dirty();
    assert_eq!(w.next_write_at(5), Some(5));
    let bans_path = server_bans_path(&path);
    let mut steps = 0;
    let len = loop {
        steps += 1;
        match w.step(5, &rooms, &server, tiny).unwrap() {
            Step::Working => assert!(!bans_path.exists(), "renamed before the end"),
            Step::Written(n) => break n,
            Step::Idle => panic!("idle mid-write"),
        }
    };
    assert!(steps > 10, "{steps} steps");
    assert!(!path.exists(), "the rooms were written for a server ban");
    assert_eq!(fs::read(&bans_path).unwrap(), server_bans_bytes(&server));
    assert_eq!(len, fs::metadata(&bans_path).unwrap().len() as usize);
    assert!(!dir.join(".state.json.server-bans.tmp").exists());
    // A room changed: the rooms' file alone, at once (each part has
    // its own second).
    let bans_inode = inode(&bans_path);
    w.mark_rooms_dirty();
    assert_eq!(w.next_write_at(500), Some(500));
    while !matches!(
        w.step(500, &rooms, &server, tiny).unwrap(),
        Step::Written(_)
    ) {}
    assert_eq!(fs::read(&path).unwrap(), rooms_bytes(&rooms));
    assert_eq!(inode(&bans_path), bans_inode, "server bans rewritten");
    assert!(!dir.join(".state.json.tmp").exists());
    // The next change of a part waits for that part's second.
    w.mark_server_bans_dirty();
    assert_eq!(w.next_write_at(600), Some(1005));
    assert_eq!(w.step(600, &rooms, &server, tiny).unwrap(), Step::Idle);
    server.insert(ban("nick:late", 0)).unwrap();
    assert!(w.flush_all(700, &rooms, &server).unwrap().is_some());
    assert!(!w.is_dirty());
    let loaded = load(&path, 700, 10_000).unwrap();
    assert_eq!(loaded.server_bans.len(), server.len());
    assert_eq!(loaded.rooms.len(), rooms.len());
    let _ = fs::remove_dir_all(&dir);
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
}

#[test]
fn a_version_1_file_is_migrated_at_load() {
    let dir = std::env::temp_dir().join(format!("muxchat-statem-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let bans_path = server_bans_path(&path);
    assert_eq!(bans_path, dir.join("state.json.server-bans"));
    let (rooms, server) = sample();
    // A leftover bans' file beside a version-1 file (a migration cut
    // short) is not read: the version-1 file is whole.
    fs::write(&bans_path, "{\"version\":2,\"server_bans\":[]}").unwrap();
    fs::write(&path, version_1_bytes(&rooms, &server)).unwrap();
    let first = load(&path, 1_000, 10_000).unwrap();
    assert_eq!(first.server_bans.len(), 2);
    assert_eq!(first.rooms.len(), 2);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"version\":2,\"rooms\":["), "{text}");
    assert!(!text.contains("server_bans"), "{text}");
    assert_eq!(
        fs::read(&bans_path).unwrap(),
        server_bans_bytes(&first.server_bans)
    );
    let again = load(&path, 1_000, 10_000).unwrap();
    assert!(again.server_bans.list().eq(first.server_bans.list()));
    assert_eq!(again.rooms.len(), 2);
    // Each file is checked as the part it holds, and named.
    fs::write(
        &bans_path,
        "{\"version\":2,\"server_bans\":[{\"mask\":\"x\"}]}",
    )
    .unwrap();
    let e = load(&path, 1_000, 10_000).unwrap_err();
    assert_eq!(e.path, bans_path);
    assert!(e.to_string().contains("server ban 0"), "{e}");
    fs::write(&bans_path, version_1_bytes(&rooms, &server)).unwrap();
    let e = load(&path, 1_000, 10_000).unwrap_err();
    assert_eq!(e.path, bans_path, "{e}");
    fs::remove_file(&bans_path).unwrap();
    fs::write(&path, server_bans_bytes(&server)).unwrap();
    let e = load(&path, 1_000, 10_000).unwrap_err();
    assert_eq!(e.path, path);
    assert!(e.to_string().contains("belong in"), "{e}");
    // Bans alone (no room ever had a state): loaded.
    fs::remove_file(&path).unwrap();
    fs::write(&bans_path, server_bans_bytes(&server)).unwrap();
    assert_eq!(load(&path, 1_000, 10_000).unwrap().server_bans.len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_ban_lifted_mid_write_is_not_written_twice_or_lost_ordering() {
    let (rooms, mut server) = sample();
    for i in 0..50 {
        server.insert(ban(&format!("nick:n{i:02}"), 0)).unwrap();
    }
    let mut s = Serialize_::start(Part::ServerBans, &rooms);
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
    for (part, whole) in [
        (Part::Rooms, rooms_bytes(&rooms)),
        (Part::ServerBans, server_bans_bytes(&server)),
    ] {
        for budget in 1..40 {
            let mut s = Serialize_::start(part, &rooms);
            let mut steps = 1;
            while !s.step(&rooms, &server, budget) {
                steps += 1;
            }
            assert_eq!(s.buf, whole, "{part:?}, budget {budget}");
            if part == Part::ServerBans {
                assert!(
                    steps >= server.len() / budget,
                    "budget {budget}: {steps} steps"
                );
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn fuzz_check_holds(text in "\\PC{0,200}") {
        fuzz_check(text.as_bytes());
        fuzz_check(format!("{{\"version\":1,\"server_bans\":[{{\"mask\":\"nick:{text}\"}}]}}").as_bytes());
    }
}
