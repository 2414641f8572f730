//! The `tollgate` command-line tool, run as a process on real data
//! directories built with the library: every subcommand's output and exit
//! code, damage, directories held open by a running engine, and bad input.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tollgate::{Engine, Message, Offset, TopicConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Records in the fixture's `orders` topic: 250 keyed ones and a binary one.
const ORDERS: u64 = 251;

/// A finished run of the tool.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the tool with `args` and no terminal on stdin.
fn run(args: &[&str]) -> Run {
    let output = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("the tool runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
    }
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a UTF-8 temporary path")
}

fn small_segments() -> TopicConfig {
    TopicConfig { segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() }
}

/// A closed data directory: topic `orders` (small segments, `ORDERS`
/// records), consumer group `billing` committed at 200, and worker group
/// `shipping` that acked offsets 0..6, rejected 6 (dead-lettered to
/// `orders.dlq`) and nacked 7 for a minute.
fn fixture(dir: &Path) {
    let engine = Engine::open(dir).unwrap();
    let orders = engine.create_topic("orders", small_segments()).unwrap();
    for i in 0..ORDERS - 1 {
        let message = Message::new(format!("order {i}")).key(format!("sku:{}", i % 7)).header("type", "created");
        orders.publish_message(message).unwrap();
    }
    orders.publish(vec![0x00, 0xff, 0x10, 0x80]).unwrap();
    let mut billing = orders.subscribe("billing").unwrap();
    for _ in 0..200 {
        billing.next().unwrap().unwrap();
    }
    billing.commit().unwrap();
    let shipping = orders.worker("shipping").unwrap();
    for offset in 0..8 {
        let delivery = shipping.receive(Duration::from_secs(1)).unwrap().expect("published above");
        assert_eq!(delivery.offset(), Offset::new(offset));
        match offset {
            6 => delivery.reject("bad address").unwrap(),
            7 => delivery.nack(Duration::from_secs(60), "carrier down").unwrap(),
            _ => delivery.ack().unwrap(),
        }
    }
    drop((shipping, billing, orders, engine));
    wait_until_unlocked(dir);
}

/// Waits until no process holds `dir`'s lock. Sibling tests spawn
/// processes, and a child forked while an engine here was open holds a copy
/// of its locked descriptor until it runs `exec`: for that moment the
/// directory still looks held open, to the tool and to `Engine::open`.
fn wait_until_unlocked(dir: &Path) {
    let lock = std::fs::File::open(dir.join("tollgate.lock")).unwrap();
    for _ in 0..2000 {
        if lock.try_lock().is_ok() {
            lock.unlock().unwrap();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} stayed locked after its engine was dropped", dir.display());
}

fn fixture_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    dir
}

/// The segment files of a topic, in offset order.
fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("topics").join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Flips one bit of the byte at `position` of `file`.
fn flip(file: &Path, position: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[position] ^= 0x40;
    std::fs::write(file, bytes).unwrap();
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Whether some line of `text` has these words, in this order, and no others.
fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines().any(|line| line.split_whitespace().eq(words.iter().copied()))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

#[test]
fn inspect_lists_topics_segments_groups_and_workers() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let run = run(&["inspect", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let out = &run.stdout;
    assert!(out.contains("topic orders\n") && out.contains("topic orders.dlq\n"), "{out}");
    let summary = format!("offsets 0..{ORDERS} ({ORDERS} records) in {} segments,", files.len());
    assert!(out.contains(&summary) && out.contains("shut down cleanly"), "{out}");
    // One row per segment file, each starting where the previous ended.
    let mut start = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let row = out.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name}: {out}"));
        let range = row.split_whitespace().nth(1).unwrap();
        let (from, to) = range.split_once("..").unwrap();
        assert_eq!(from.parse::<u64>().unwrap(), start, "{row}");
        start = to.parse().unwrap();
    }
    assert_eq!(start, ORDERS);
    let billing = out.lines().find(|l| l.trim_start().starts_with("billing")).expect("the consumer group");
    assert!(billing.split_whitespace().take(3).eq(["billing", "200", "51"]), "{billing}");
    assert!(has_line(out, &["shipping", "7", "0", "1", "0", "244", "1"]), "{out}");
}

#[test]
fn inspect_json_reports_offsets_lag_and_dead_letters() {
    let dir = fixture_dir();
    let run = run(&["inspect", "--json", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["held_open"], false);
    let topics = doc["topics"].as_array().unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "orders.dlq"]);
    let orders = &topics[0];
    assert_eq!((orders["oldest"].as_u64(), orders["end"].as_u64()), (Some(0), Some(ORDERS)));
    assert_eq!(orders["config"]["segment_bytes"], 4096);
    assert_eq!(orders["config"]["durability"], "buffered");
    assert_eq!(orders["clean_shutdown"], true);
    let files = segments(dir.path(), "orders");
    let segments = orders["segments"].as_array().unwrap();
    assert_eq!(segments.len(), files.len());
    for (segment, file) in segments.iter().zip(&files) {
        assert_eq!(segment["file"], file.to_str().unwrap());
        assert!(segment["bytes"].as_u64().unwrap() <= segment["file_bytes"].as_u64().unwrap());
    }
    for pair in segments.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["base"]);
    }
    assert_eq!(segments.last().unwrap()["end"], ORDERS);
    let billing = &orders["groups"][0];
    assert_eq!((billing["name"].as_str(), billing["committed"].as_u64()), (Some("billing"), Some(200)));
    assert_eq!(billing["lag"], ORDERS - 200);
    let shipping = &orders["workers"][0];
    assert_eq!(shipping["name"], "shipping");
    assert_eq!(shipping["low_water"], 7);
    assert_eq!(shipping["in_flight_or_retrying"], 1);
    assert_eq!(shipping["retry_scheduled"], 1);
    assert_eq!(shipping["rejected"], 0);
    assert_eq!(shipping["lag"], ORDERS - 7);
    assert_eq!(shipping["dead_letter_topic"], "orders.dlq");
    assert_eq!(shipping["dead_lettered"], 1);
    assert_eq!(topics[1]["end"], 1);
}

#[test]
fn verify_passes_a_clean_directory() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    let ok = format!("topic orders: {} segments, {ORDERS} records: ok", files.len());
    assert!(run.stdout.contains(&ok), "{run:?}");
    assert!(run.stdout.contains("topic orders.dlq: 1 segment, 1 record: ok"), "{run:?}");
    let summary = run.stdout.lines().last().unwrap();
    assert!(summary.starts_with("verified ") && summary.ends_with(": clean"), "{summary}");
    assert!(summary.contains(&format!("{} records", ORDERS + 1)), "{summary}");
}

#[test]
fn verify_names_the_file_and_position_of_a_flipped_byte_in_a_sealed_segment() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let sealed = &files[1];
    // Inside the segment's first frame, which starts after the 32-byte header.
    flip(sealed, 32 + 40);
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 1, "{run:?}");
    let expected = format!("CORRUPT: corrupt data in {} at byte 32: the frame's CRC does not match", sealed.display());
    assert!(run.stdout.contains(&expected), "{run:?}");
    // The records before it are counted, and what a cut loses is named.
    let base: u64 = sealed.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert!(run.stdout.contains(&format!("topic orders: 2 segments, {base} records")), "{run:?}");
    assert!(run.stdout.contains(&format!("offsets from {base} on are lost there")), "{run:?}");
    assert!(run.stdout.lines().last().unwrap().ends_with("1 topic with corruption"), "{run:?}");
}

#[test]
fn verify_names_the_file_and_position_of_a_flipped_byte_in_the_active_segment() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let active = files.last().unwrap();
    flip(active, 32 + 12);
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 1, "{run:?}");
    let expected = format!("corrupt data in {} at byte 32: the frame's CRC does not match", active.display());
    assert!(run.stdout.contains(&expected), "{run:?}");
    // Reading up to the damage works; reading through it fails, naming it.
    let base = active.file_stem().unwrap().to_str().unwrap().trim_start_matches('0').to_owned();
    let dump = crate::run(&["dump", path(dir.path()), "orders", "--from", &base]);
    assert_eq!(dump.code, 1, "{dump:?}");
    assert!(dump.stdout.is_empty() && dump.stderr.contains(&expected), "{dump:?}");
}

#[test]
fn verify_reports_damaged_offset_and_queue_state_files() {
    let dir = fixture_dir();
    let topic = dir.path().join("topics").join("orders");
    let offsets = topic.join("groups").join("billing.offset");
    flip(&offsets, 0);
    let state = topic.join("queues").join("shipping").join("state");
    flip(&state, 30);
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 1, "{run:?}");
    let damaged = format!("damaged: corrupt data in {} at byte 0: not a tollgate slot file", offsets.display());
    assert!(run.stdout.contains(&damaged), "{run:?}");
    // Byte 30 is in the header's low-water mark: the header's CRC, at byte
    // 12, no longer matches.
    let damaged =
        format!("damaged: corrupt data in {} at byte 12: the state file's header fails its checksum", state.display());
    assert!(run.stdout.contains(&damaged), "{run:?}");
    assert!(run.stdout.contains("which starts the group over at the oldest record"), "{run:?}");
    // `inspect` shows both groups as damaged rather than failing.
    let inspect = crate::run(&["inspect", "--json", path(dir.path())]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    let doc: Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert!(doc["topics"][0]["groups"][0]["damage"].as_str().unwrap().contains("billing.offset"));
    assert!(doc["topics"][0]["workers"][0]["damage"].as_str().unwrap().contains("state"));
}

#[test]
fn verify_reports_a_torn_tail_after_an_unclean_shutdown_without_failing() {
    let dir = unclean_copy();
    let active = segments(dir.path(), "orders").pop().unwrap();
    let data_end = data_end(&active);
    // Half a frame past the end of the data, as a crash mid-write leaves.
    let mut bytes = std::fs::read(&active).unwrap();
    bytes[data_end..data_end + 8].copy_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4]);
    std::fs::write(&active, bytes).unwrap();
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    let torn =
        format!("records: torn tail at {} at byte {data_end} (the frame's CRC does not match)", active.display());
    assert!(run.stdout.contains(&torn), "{run:?}");
    let lost = format!("the next open cuts the log there; offsets from {} on are lost there", ORDERS + 1);
    assert!(run.stdout.contains(&lost), "{run:?}");
    // Repair cuts it like the next open would, and nothing is lost.
    let repair = crate::run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(repair.code, 0, "{repair:?}");
    let after = crate::run(&["verify", path(dir.path())]);
    assert!(after.code == 0 && !after.stdout.contains("torn"), "{after:?}");
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.topic("orders").unwrap().info().next, Offset::new(ORDERS + 1));
}

#[test]
fn verify_reports_the_frame_being_written_in_a_directory_held_open() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.create_topic("live", small_segments()).unwrap();
    for i in 0..10 {
        topic.publish(format!("live {i}")).unwrap();
    }
    // A frame half written after the published ones, as a writer leaves it
    // between its first and last byte.
    let active = segments(dir.path(), "live").pop().unwrap();
    let data_end = data_end(&active);
    let file = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], data_end as u64).unwrap();
    let run = run(&["verify", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("topic live: 1 segment, 10 records: ok\n"), "{run:?}");
    let place =
        format!("the frame being written (the directory is in use) is at {} at byte {data_end}", active.display());
    assert!(run.stdout.contains(&place), "{run:?}");
    let dump = crate::run(&["dump", path(dir.path()), "live"]);
    assert_eq!((dump.code, dump.stdout.lines().count()), (0, 10), "{dump:?}");
}

/// A copy of a fixture whose engine never shut down (as after a crash):
/// the engine is leaked, so its files keep their unclean state.
fn unclean_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let engine = Engine::open(dir.path()).unwrap();
    let orders = engine.topic("orders").unwrap();
    orders.publish(b"after reopening").unwrap();
    // Leaked: no clean shutdown. Its lock is this process's, so work on a copy.
    std::mem::forget(orders);
    std::mem::forget(engine);
    let copy = tempfile::tempdir().unwrap();
    for (file, bytes) in snapshot(dir.path()) {
        let to = copy.path().join(file.strip_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    std::fs::remove_file(copy.path().join("tollgate.lock")).unwrap();
    copy
}

/// Where a segment's frames end: after the last frame whose size field is
/// not zero (frames are back to back from byte 32).
fn data_end(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    let mut at = 32;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += len;
    }
    at
}

#[test]
fn dump_prints_offsets_keys_headers_and_payloads() {
    let dir = fixture_dir();
    let run = run(&["dump", path(dir.path()), "orders", "--from", "249"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].starts_with("249 20"), "{}", lines[0]);
    assert!(lines[0].ends_with(r#"Z key="sku:4" headers={type="created"} payload="order 249""#), "{}", lines[0]);
    assert!(lines[1].starts_with("250 ") && lines[1].ends_with("Z payload=hex:00ff1080"), "{}", lines[1]);
    // Reserved binary headers are decoded in text; in JSON, values that
    // are not UTF-8 are base64.
    {
        let engine = Engine::open(dir.path()).unwrap();
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_000_000_000_000_000);
        engine.topic("prio").unwrap().publish_message(Message::new("p").priority(3).deliver_at(at)).unwrap();
    }
    wait_until_unlocked(dir.path());
    let prio = crate::run(&["dump", path(dir.path()), "prio"]);
    let decoded = r#"headers={tollgate.priority=3, tollgate.deliver-at=2001-09-09T01:46:40.000000Z} payload="p""#;
    assert!(prio.stdout.trim_end().ends_with(decoded), "{prio:?}");
    let prio = crate::run(&["dump", path(dir.path()), "prio", "--json"]);
    let headers = &json_lines(&prio.stdout)[0]["headers"];
    assert_eq!(headers[1], serde_json::json!({ "name": "tollgate.deliver-at", "value_base64": "AIDGpH6NAwA=" }));
    // Long payloads are cut in text, with their size.
    let dlq = crate::run(&["dump", path(dir.path()), "orders.dlq", "--max-bytes", "3"]);
    assert_eq!(dlq.code, 0, "{dlq:?}");
    assert!(dlq.stdout.contains(r#"tollgate.dlq.reason="bad"...(11 bytes)"#), "{dlq:?}");
    assert!(dlq.stdout.contains(r#"payload="ord"...(7 bytes)"#), "{dlq:?}");
}

#[test]
fn dump_json_honours_from_and_limit_and_encodes_binary_payloads() {
    let dir = fixture_dir();
    let run = run(&["dump", path(dir.path()), "orders", "--from", "100", "--limit", "5", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let records = json_lines(&run.stdout);
    assert_eq!(records.len(), 5);
    for (i, record) in records.iter().enumerate() {
        let offset = 100 + i as u64;
        assert_eq!(record["offset"], offset);
        assert_eq!(record["payload"], format!("order {offset}"));
        assert_eq!(record["key"], format!("sku:{}", offset % 7));
        assert_eq!(record["headers"], serde_json::json!([{ "name": "type", "value": "created" }]));
        assert!(record["timestamp_us"].as_u64().unwrap() > 0);
    }
    let run = crate::run(&["dump", path(dir.path()), "orders", "--from", "250", "--json"]);
    let records = json_lines(&run.stdout);
    assert_eq!(records.len(), 1, "{run:?}");
    assert_eq!(records[0]["payload_base64"], "AP8QgA==");
    assert_eq!(records[0]["payload_bytes"], 4);
    assert!(records[0]["key"].is_null() && records[0].get("payload").is_none());
    // The dead letter carries where it came from.
    let run = crate::run(&["dump", path(dir.path()), "orders.dlq", "--json"]);
    let dead = &json_lines(&run.stdout)[0];
    let header = |name: &str| dead["headers"].as_array().unwrap().iter().find(|h| h["name"] == name).cloned();
    assert_eq!(header("tollgate.dlq.offset").unwrap()["value"], "6");
    assert_eq!(header("tollgate.dlq.reason").unwrap()["value"], "bad address");
}

#[test]
fn dump_at_the_end_prints_nothing_and_past_it_fails() {
    let dir = fixture_dir();
    let at_end = run(&["dump", path(dir.path()), "orders", "--from", &ORDERS.to_string()]);
    assert_eq!((at_end.code, at_end.stdout.as_str()), (0, ""), "{at_end:?}");
    let past = run(&["dump", path(dir.path()), "orders", "--from", &(ORDERS + 1).to_string()]);
    assert_eq!(past.code, 2, "{past:?}");
    let message =
        format!("tollgate: offset {} is past the end of topic \"orders\": its next offset is {ORDERS}\n", ORDERS + 1);
    assert_eq!(past.stderr, message);
}

#[test]
fn tail_prints_the_last_records() {
    let dir = fixture_dir();
    let run = run(&["tail", path(dir.path()), "orders", "-n", "3", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let offsets: Vec<u64> = json_lines(&run.stdout).iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [ORDERS - 3, ORDERS - 2, ORDERS - 1]);
    let run = crate::run(&["tail", path(dir.path()), "orders.dlq"]);
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
}

/// A child process killed when dropped, if it is still running.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the tool with its stdout's lines sent to the returned channel.
fn spawn(args: &[&str]) -> (Spawned, mpsc::Receiver<String>) {
    let mut child =
        Command::new(BIN).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("the tool runs");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    (Spawned(child), received)
}

/// The offset of each of the next `count` JSON lines.
fn next_offsets(lines: &mpsc::Receiver<String>, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| {
            let line = lines.recv_timeout(Duration::from_secs(20)).expect("a line within 20 s");
            serde_json::from_str::<Value>(&line).unwrap()["offset"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn tail_follow_prints_new_records_across_segment_rolls_and_stops_when_the_topic_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.create_topic("live", small_segments()).unwrap();
    for i in 0..5 {
        topic.publish(format!("before {i}")).unwrap();
    }
    let (mut child, lines) =
        spawn(&["tail", "-f", "-n", "2", "--json", "--interval-ms", "10", path(dir.path()), "live"]);
    assert_eq!(next_offsets(&lines, 2), [3, 4]);
    // Enough to fill several 4 KiB segments.
    for i in 0..300 {
        topic.publish(format!("after {i:04} {}", "x".repeat(40))).unwrap();
    }
    assert!(topic.info().segments > 3, "{:?}", topic.info());
    assert_eq!(next_offsets(&lines, 300), (5..305).collect::<Vec<u64>>());
    engine.delete_topic("live").unwrap();
    let status = wait(&mut child.0, Duration::from_secs(20)).expect("tail -f stops when its topic is deleted");
    assert!(status.success(), "{status:?}");
}

fn wait(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn tail_follow_is_killed_cleanly_and_exits_quietly_on_a_closed_pipe() {
    let dir = fixture_dir();
    let (mut child, lines) = spawn(&["tail", "-f", "-n", "1", path(dir.path()), "orders"]);
    assert!(lines.recv_timeout(Duration::from_secs(20)).unwrap().starts_with("250 "));
    child.0.kill().unwrap();
    assert!(!child.0.wait().unwrap().success());
    // A reader that goes away (`| head -1`) ends `dump` without an error,
    // given more output than the pipe holds.
    {
        let engine = Engine::open(dir.path()).unwrap();
        let big = engine.topic("big").unwrap();
        big.publish_batch((0..5000).map(|i| Message::new(format!("{i:05} {}", "y".repeat(100))))).unwrap();
    }
    wait_until_unlocked(dir.path());
    let mut dump = Command::new(BIN)
        .args(["dump", path(dir.path()), "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(dump.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("0 "), "{first}");
    let output = dump.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn repair_refuses_without_yes_when_stdin_is_not_a_terminal() {
    let dir = fixture_dir();
    flip(&segments(dir.path(), "orders")[1], 32 + 40);
    let before = snapshot(dir.path());
    let run = run(&["repair", path(dir.path())]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("repair would change") && run.stdout.contains("at byte 32"), "{run:?}");
    assert!(run.stderr.contains("not repaired") && run.stderr.contains("--yes"), "{run:?}");
    assert!(snapshot(dir.path()) == before, "repair changed files without confirmation");
}

#[test]
fn repair_with_yes_cuts_at_the_corruption_and_leaves_a_clean_directory() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let sealed = &files[1];
    let base: u64 = sealed.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    flip(sealed, 32 + 40);
    let run = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    let cut = format!("topic orders: cut {} at byte 32 (the frame's CRC does not match)", sealed.display());
    assert!(run.stdout.contains(&cut), "{run:?}");
    let removed = files.len() - 2;
    assert!(run.stdout.contains(&format!("removed {removed} later segment")), "{run:?}");
    assert!(run.stdout.lines().last().unwrap().ends_with(": clean"), "{run:?}");
    let verify = crate::run(&["verify", path(dir.path())]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(segments(dir.path(), "orders").len(), 2);
    let engine = Engine::open(dir.path()).unwrap();
    let orders = engine.topic("orders").unwrap();
    assert_eq!(orders.info().next, Offset::new(base));
    assert_eq!(orders.subscribe("billing").unwrap().committed(), Offset::new(base));
}

#[test]
fn repair_refuses_a_directory_held_open() {
    let dir = fixture_dir();
    flip(&segments(dir.path(), "orders")[1], 32 + 40);
    let _engine = Engine::open(dir.path()).unwrap();
    let run = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(run.code, 2, "{run:?}");
    let message = format!(
        "tollgate: {}: in use by a running process (its lock file is held); stop it before repairing\n",
        dir.path().display()
    );
    assert_eq!(run.stderr, message);
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn repair_of_a_clean_directory_changes_nothing() {
    let dir = fixture_dir();
    let before = snapshot(dir.path());
    let run = run(&["repair", path(dir.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, format!("nothing to repair: {} is clean\n", dir.path().display()));
    assert!(snapshot(dir.path()) == before, "repair changed a clean directory");
}

/// `snapshot` of `dir` with paths relative to it, without the lock file.
fn relative_snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| !path.ends_with("tollgate.lock"))
        .map(|(path, bytes)| (path.strip_prefix(dir).unwrap().to_path_buf(), bytes))
        .collect()
}

#[test]
fn backup_copies_a_stopped_directory_file_for_file() {
    let dir = fixture_dir();
    let before = relative_snapshot(dir.path());
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy");
    let run = run(&["backup", path(dir.path()), path(&copy)]);
    assert_eq!(run.code, 0, "{run:?}");
    let summary = format!("backed up {} to {}: 2 topics, ", dir.path().display(), copy.display());
    assert!(run.stdout.starts_with(&summary), "{run:?}");
    assert_eq!(relative_snapshot(dir.path()), before, "the backup changed the directory");
    // Topics at rest are copied as they are, byte for byte.
    assert_eq!(relative_snapshot(&copy), before);
    let verify = crate::run(&["verify", path(&copy)]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let engine = Engine::open(&copy).unwrap();
    let orders = engine.topic("orders").unwrap();
    assert!(orders.recovery_report().clean);
    assert_eq!(orders.info().next, Offset::new(ORDERS));
    assert_eq!(orders.subscribe("billing").unwrap().committed(), Offset::new(200));
}

#[test]
fn backup_refuses_a_directory_held_open_and_a_destination_in_use() {
    let dir = fixture_dir();
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("notes.txt"), b"mine").unwrap();
    let run = run(&["backup", path(dir.path()), path(dest.path())]);
    assert_eq!(run.code, 2, "{run:?}");
    let message = format!(
        "tollgate: {}: not backed up: {} exists and is not an empty directory\n",
        dir.path().display(),
        dest.path().display()
    );
    assert_eq!(run.stderr, message);
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 1, "the destination is untouched");

    let _engine = Engine::open(dir.path()).unwrap();
    let copy = dest.path().join("copy");
    let run = crate::run(&["backup", path(dir.path()), path(&copy)]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("in use by a running process") && run.stderr.contains("Engine::backup_to"), "{run:?}");
    assert!(!copy.exists());
}

#[test]
fn bench_prints_every_measurement() {
    let parent = tempfile::tempdir().unwrap();
    let run = run(&["bench", "--seconds", "0.02", "--dir", path(parent.path())]);
    assert_eq!(run.code, 0, "{run:?}");
    for label in [
        "lock+unlock, 1 thread:",
        "lock+unlock, 2 threads, own keys:",
        "publish 64 B, buffered:",
        "subscriber consume:",
        "worker receive+ack:",
    ] {
        let line = run.stdout.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {run:?}"));
        let words: Vec<&str> = line[label.len()..].split_whitespace().collect();
        assert_eq!(words.len(), 2, "{line}");
        assert!(words[0].replace(',', "").parse::<u64>().unwrap() > 0, "{line}");
    }
    for label in ["publish -> subscriber latency:", "publish 64 B, sync:"] {
        let line = run.stdout.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {run:?}"));
        assert!(line.contains(" p50 ") || line.contains(":p50 "), "{line}");
        assert!(line.contains(" p99 ") && line.contains(" p99.9 ") && line.ends_with("samples)"), "{line}");
    }
    // Its directory is gone.
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn read_commands_leave_a_directory_held_open_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let engine = Engine::open(dir.path()).unwrap();
    let orders = engine.topic("orders").unwrap();
    let live = engine.create_topic("live", small_segments()).unwrap();
    let stop = AtomicBool::new(false);
    let note = format!("note: {} is held open by a running process", dir.path().display());
    let dir_arg = path(dir.path());
    let reads: [&[&str]; 6] = [
        &["inspect", dir_arg],
        &["inspect", "--json", dir_arg],
        &["verify", dir_arg],
        &["dump", dir_arg, "live", "--json"],
        &["dump", dir_arg, "orders", "--from", "240"],
        &["tail", dir_arg, "live", "-n", "5"],
    ];
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            // Paced, so that the directory stays small however long the reads take.
            let mut published = 0u64;
            while (!stop.load(Ordering::Relaxed) || published < 200) && published < 20_000 {
                live.publish_message(Message::new(format!("live {published}")).key("k")).unwrap();
                published += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            published
        });
        // With a publisher writing (and rolling segments).
        for args in reads {
            let run = run(args);
            assert_eq!(run.code, 0, "{args:?}: {run:?}");
            assert!(run.stderr.starts_with(&note), "{args:?}: {run:?}");
        }
        let dump = run(&["dump", dir_arg, "live", "--json"]);
        let offsets: Vec<u64> = json_lines(&dump.stdout).iter().map(|r| r["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<u64>>(), "dense from 0");
        stop.store(true, Ordering::Relaxed);
        let published = writer.join().unwrap();
        assert!(published >= 200);
    });
    // The writer stopped, the engine still open: nothing may change.
    live.sync().unwrap();
    orders.sync().unwrap();
    let before = snapshot(dir.path());
    for args in reads {
        let run = run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let verify = run(&["verify", dir_arg]);
    assert!(verify.stdout.lines().last().unwrap().ends_with(": clean"), "{verify:?}");
    let after = snapshot(dir.path());
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "files were added or removed");
    for (file, bytes) in &before {
        assert!(after[file] == *bytes, "{} changed", file.display());
    }
    let tail = run(&["tail", dir_arg, "live", "-n", "1", "--json"]);
    let last = json_lines(&tail.stdout)[0]["offset"].as_u64().unwrap();
    assert_eq!(Offset::new(last + 1), live.info().next);
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let dir = fixture_dir();
    let missing = dir.path().join("missing");
    let missing = path(&missing);
    for args in [
        vec!["inspect", missing],
        vec!["verify", missing],
        vec!["dump", missing, "orders"],
        vec!["tail", missing, "orders"],
        vec!["repair", "--yes", missing],
    ] {
        let run = run(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr, format!("tollgate: {missing}: no such directory\n"), "{args:?}");
    }
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "not tollgate").unwrap();
    for command in ["inspect", "verify", "repair"] {
        let run = run(&[command, path(other.path())]);
        assert_eq!(run.code, 2, "{command}: {run:?}");
        let message =
            format!("tollgate: {} is not a tollgate data directory: it has no tollgate.meta\n", other.path().display());
        assert_eq!(run.stderr, message, "{command}");
    }
    for command in ["dump", "tail"] {
        let run = run(&[command, path(dir.path()), "nope"]);
        assert_eq!(run.code, 2, "{command}: {run:?}");
        assert_eq!(run.stderr, format!("tollgate: {}: topic \"nope\" does not exist\n", dir.path().display()));
    }
    let run = run(&["dump", path(dir.path()), "../orders"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("tollgate: invalid name \"../orders\""), "{run:?}");
    // Usage errors are clap's, with its exit code 2.
    let run = crate::run(&["dump", path(dir.path())]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("required"), "{run:?}");
    let run = crate::run(&["dump", path(dir.path()), "orders", "--from", "-1"]);
    assert_eq!(run.code, 2, "{run:?}");
}

/// Regression: `tail -f` on a topic deleted and created again (and rolled
/// past the old segment) reported corruption instead of stopping.
#[test]
fn tail_follow_stops_when_the_topic_is_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let topic = engine.create_topic("t", small_segments()).unwrap();
    for i in 0..5 {
        topic.publish(format!("old {i}")).unwrap();
    }
    let (mut child, lines) = spawn(&["tail", "-f", "--json", "--interval-ms", "10", path(dir.path()), "t"]);
    assert_eq!(next_offsets(&lines, 5), [0, 1, 2, 3, 4]);
    drop(topic);
    engine.delete_topic("t").unwrap();
    let topic = engine.create_topic("t", small_segments()).unwrap();
    for i in 0..400 {
        topic.publish(format!("new {i} {}", "y".repeat(40))).unwrap();
    }
    assert!(topic.info().segments > 2, "{:?}", topic.info());
    let status = wait(&mut child.0, Duration::from_secs(20)).expect("tail -f stops when its topic is recreated");
    assert!(status.success(), "{status:?}");
}

/// Writes both slots of a two-slot file with `(a, b, c)` and a valid CRC,
/// the newest (generation 9) in slot 1 (`docs/FORMAT.md`).
fn forge_slots(file: &Path, a: u64, b: u64, c: u32) {
    let mut bytes = std::fs::read(file).unwrap();
    for (slot, generation) in [(0usize, 8u64), (1, 9)] {
        let at = 16 + slot * 32;
        let slot = &mut bytes[at..at + 32];
        slot[..8].copy_from_slice(&generation.to_le_bytes());
        slot[8..16].copy_from_slice(&a.to_le_bytes());
        slot[16..24].copy_from_slice(&b.to_le_bytes());
        slot[24..28].copy_from_slice(&c.to_le_bytes());
        let crc = crc32fast::hash(&slot[..28]);
        slot[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(file, bytes).unwrap();
}

/// Regression: a checkpoint with a valid CRC recording a clean shutdown at
/// next offset 0 made `inspect` subtract past zero (a panic in a debug
/// build) and `verify` report lost data that `repair` did not cut.
#[test]
fn a_checkpoint_that_disagrees_with_the_segments_is_reported_and_repaired() {
    let dir = fixture_dir();
    let files = segments(dir.path(), "orders");
    let last: u64 = files.last().unwrap().file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let checkpoint = dir.path().join("topics/orders/checkpoint");
    forge_slots(&checkpoint, last, 0, 100);
    let inspect = run(&["inspect", path(dir.path())]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    assert!(inspect.stdout.contains(&format!("offsets 0..{ORDERS} ({ORDERS} records)")), "{inspect:?}");
    assert!(inspect.stdout.contains("note: the checkpoint's clean-shutdown record disagrees"), "{inspect:?}");
    let inspect = run(&["inspect", "--json", path(dir.path())]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    let verify = run(&["verify", path(dir.path())]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let damaged = format!(
        "damaged: corrupt data in {} at byte 48: its clean-shutdown record disagrees with the last segment's data",
        checkpoint.display()
    );
    assert!(verify.stdout.contains(&damaged), "{verify:?}");
    assert!(!verify.stdout.contains("lost there") && !verify.stdout.contains("CORRUPT"), "{verify:?}");
    let repair = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(repair.stdout.contains("scans every segment and rewrites the checkpoint"), "{repair:?}");
    assert!(repair.stdout.contains("topic orders: intact"), "{repair:?}");
    assert!(repair.stdout.lines().last().unwrap().ends_with(": clean"), "{repair:?}");
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.topic("orders").unwrap().info().next, Offset::new(ORDERS));
}

/// A group offset file with both slots invalid is damage (a torn write
/// damages one slot only): the group's subscribe fails, `verify` says so,
/// and `repair` removes the file, so the group starts over.
#[test]
fn an_offset_file_with_both_slots_invalid_is_damage_that_repair_removes() {
    let dir = fixture_dir();
    let offsets = dir.path().join("topics/orders/groups/billing.offset");
    flip(&offsets, 16 + 8);
    flip(&offsets, 48 + 8);
    let verify = run(&["verify", path(dir.path())]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let effect = "subscribing the group fails until repair, which removes this file";
    assert!(verify.stdout.contains(effect), "{verify:?}");
    {
        let engine = Engine::open(dir.path()).unwrap();
        let refused = engine.topic("orders").unwrap().subscribe("billing");
        assert!(matches!(refused, Err(tollgate::TopicError::Corrupt(_))), "{refused:?}");
    }
    let repair = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(!offsets.exists());
    let engine = Engine::open(dir.path()).unwrap();
    let billing = engine.topic("orders").unwrap().subscribe("billing").unwrap();
    assert_eq!(billing.committed(), Offset::new(0));
}

/// A checkpoint with both slots invalid keeps the topic from opening;
/// `repair` replaces it and keeps every record.
#[test]
fn a_checkpoint_with_both_slots_invalid_is_replaced_by_repair() {
    let dir = fixture_dir();
    let checkpoint = dir.path().join("topics/orders/checkpoint");
    flip(&checkpoint, 16 + 8);
    flip(&checkpoint, 48 + 8);
    let verify = run(&["verify", path(dir.path())]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let effect = "opening the topic fails until repair, which replaces the checkpoint";
    assert!(verify.stdout.contains(effect), "{verify:?}");
    assert!(matches!(Engine::open(dir.path()).unwrap().topic("orders"), Err(tollgate::TopicError::Corrupt(_))));
    let repair = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(repair.code, 0, "{repair:?}");
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.topic("orders").unwrap().info().next, Offset::new(ORDERS));
}

/// A checkpoint whose magic is damaged keeps the topic from opening; `repair`
/// replaces it and keeps every record.
#[test]
fn a_checkpoint_that_is_not_a_slot_file_is_replaced_by_repair() {
    let dir = fixture_dir();
    let checkpoint = dir.path().join("topics/orders/checkpoint");
    flip(&checkpoint, 0);
    let verify = run(&["verify", path(dir.path())]);
    assert_eq!(verify.code, 1, "{verify:?}");
    let effect = "opening the topic fails until repair, which replaces the checkpoint";
    assert!(verify.stdout.contains(effect), "{verify:?}");
    let repair = run(&["repair", "--yes", path(dir.path())]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(repair.stdout.lines().last().unwrap().ends_with(": clean"), "{repair:?}");
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.topic("orders").unwrap().info().next, Offset::new(ORDERS));
}

/// A name a terminal obeys: it sets the window title (`ESC ] 0 ; ... BEL`)
/// and clears the screen (`ESC [ 2 J`).
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2JRED";
/// `HOSTILE` as the tool prints it.
const HOSTILE_SHOWN: &str = r"\u{1b}]0;pwned\u{7}\u{1b}[2JRED";
/// A group name with DEL and a C1 control (CSI), which JSON allows raw.
const HOSTILE_GROUP: &str = "billing\u{9b}2J\x7f";
/// `HOSTILE_GROUP` as the tool prints it.
const HOSTILE_GROUP_SHOWN: &str = r"billing\u{9b}2J\u{7f}";

/// Fails unless `text` is free of control characters but line breaks.
fn assert_no_control_characters(what: &str, text: &str) {
    let found: Vec<char> = text.chars().filter(|&c| c.is_control() && c != '\n').collect();
    assert!(found.is_empty(), "{what} prints control characters {found:?}:\n{}", text.escape_debug());
}

/// A data directory, in a directory whose name holds `HOSTILE`, with topic
/// `HOSTILE` (a few segments of records with `HOSTILE` keys and headers), its consumer group
/// `HOSTILE_GROUP`, its worker group `HOSTILE` and dead-letter topic
/// `HOSTILE.dlq`. New names may not hold control characters, so they are
/// given on disk, as an older build (which allowed them) or a hand did.
/// Returns the parent (to keep) and the data directory.
fn hostile_fixture() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(format!("data {HOSTILE}"));
    {
        let engine = Engine::open(&dir).unwrap();
        let topic = engine.create_topic("plain", small_segments()).unwrap();
        for i in 0..200 {
            topic.publish_message(Message::new(format!("order {i}")).key(HOSTILE).header(HOSTILE, HOSTILE)).unwrap();
        }
        let mut group = topic.subscribe("group").unwrap();
        group.next().unwrap().unwrap();
        group.commit().unwrap();
        let worker = topic.worker("workers").unwrap();
        worker.receive(Duration::from_secs(1)).unwrap().expect("published above").reject(HOSTILE).unwrap();
    }
    wait_until_unlocked(&dir);
    let topics = dir.join("topics");
    let rename = |from: PathBuf, to: PathBuf| std::fs::rename(from, to).unwrap();
    rename(topics.join("plain/groups/group.offset"), topics.join(format!("plain/groups/{HOSTILE_GROUP}.offset")));
    rename(topics.join("plain/queues/workers"), topics.join("plain/queues").join(HOSTILE));
    rename(topics.join("plain.dlq"), topics.join(format!("{HOSTILE}.dlq")));
    rename(topics.join("plain"), topics.join(HOSTILE));
    (parent, dir)
}

/// Names and paths holding control characters (issue 12, item 7): every
/// command prints them escaped, never raw, and `--json` keeps them exact.
#[test]
fn names_and_paths_with_control_characters_are_printed_escaped() {
    let (_parent, dir) = hostile_fixture();
    let dir_arg = path(&dir);
    let dir_shown = dir_arg.replace(HOSTILE, HOSTILE_SHOWN);
    let dlq = format!("{HOSTILE}.dlq");
    let check = |args: &[&str], code: i32| {
        let run = run(args);
        let what = format!("{:?}", args);
        assert_eq!(run.code, code, "{what}: {run:?}");
        assert_no_control_characters(&format!("{what} on stdout"), &run.stdout);
        assert_no_control_characters(&format!("{what} on stderr"), &run.stderr);
        run
    };

    let inspect = check(&["inspect", dir_arg], 0);
    assert!(inspect.stdout.starts_with(&format!("{dir_shown}: 2 topics")), "{inspect:?}");
    assert!(inspect.stdout.contains(&format!("\ntopic {HOSTILE_SHOWN}\n")), "{inspect:?}");
    assert!(inspect.stdout.contains(&format!("\ntopic {HOSTILE_SHOWN}.dlq\n")), "{inspect:?}");
    assert!(inspect.stdout.contains(&format!("  {HOSTILE_GROUP_SHOWN} ")), "{inspect:?}");
    assert!(inspect.stdout.contains(&format!("dead-lettered to {HOSTILE_SHOWN}.dlq")), "{inspect:?}");

    // JSON escapes every control character and gives the names back exactly.
    let json: Value = serde_json::from_str(&check(&["inspect", "--json", dir_arg], 0).stdout).unwrap();
    assert_eq!(json["directory"], dir_arg);
    let names: Vec<&str> = json["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, [HOSTILE, dlq.as_str()]);
    assert_eq!(json["topics"][0]["groups"][0]["name"], HOSTILE_GROUP);
    assert_eq!(json["topics"][0]["workers"][0]["name"], HOSTILE);
    assert_eq!(json["topics"][0]["workers"][0]["dead_letter_topic"], dlq.as_str());

    let verify = check(&["verify", dir_arg], 0);
    let head = format!("topic {HOSTILE_SHOWN}: {} segments, 200 records: ok", segments(&dir, HOSTILE).len());
    assert!(verify.stdout.contains(&head), "{verify:?}");

    // Keys, header names and values, payloads (a dead letter's reason).
    let dump = check(&["dump", dir_arg, HOSTILE, "--limit", "1"], 0);
    let header = format!("headers={{{HOSTILE_SHOWN}=\"\\u{{1b}}]0;pwned\\u{{7}}\\u{{1b}}[2JRED\"}}");
    assert!(dump.stdout.contains(&header), "{dump:?}");
    check(&["dump", dir_arg, &dlq], 0);
    check(&["tail", dir_arg, HOSTILE, "-n", "2"], 0);
    let lines = check(&["dump", dir_arg, HOSTILE, "--limit", "2", "--json"], 0);
    for record in json_lines(&lines.stdout) {
        assert_eq!(record["key"], HOSTILE);
        assert_eq!(record["headers"][0]["name"], HOSTILE);
    }
    check(&["tail", dir_arg, &dlq, "--json"], 0);

    // Failures and notes on stderr.
    let missing = check(&["dump", dir_arg, &format!("{HOSTILE}nope")], 2);
    assert!(missing.stderr.starts_with(&format!("tollgate: {dir_shown}: topic ")), "{missing:?}");
    check(&["inspect", &format!("{dir_arg}{HOSTILE}")], 2);
    {
        let _engine = Engine::open(&dir).unwrap();
        let held = check(&["inspect", dir_arg], 0);
        assert!(held.stderr.starts_with(&format!("note: {dir_shown} is held open")), "{held:?}");
        check(&["repair", "--yes", dir_arg], 2);
    }
    wait_until_unlocked(&dir);

    // Damage, which names the files, and its repair.
    let segment = segments(&dir, HOSTILE).remove(0);
    flip(&segment, 32 + 40);
    let offsets = dir.join("topics").join(HOSTILE).join(format!("groups/{HOSTILE_GROUP}.offset"));
    flip(&offsets, 16 + 8);
    flip(&offsets, 48 + 8);
    let verify = check(&["verify", dir_arg], 1);
    let segment_shown = path(&segment).replace(HOSTILE, HOSTILE_SHOWN);
    assert!(verify.stdout.contains(&format!("CORRUPT: corrupt data in {segment_shown} at byte 32")), "{verify:?}");
    assert!(verify.stdout.contains(&format!("{HOSTILE_GROUP_SHOWN}.offset")), "{verify:?}");
    check(&["inspect", dir_arg], 0);
    check(&["dump", dir_arg, HOSTILE], 1);
    let repair = check(&["repair", "--yes", dir_arg], 0);
    assert!(repair.stdout.contains(&format!("  topic {HOSTILE_SHOWN}: cut {segment_shown} at byte 32")), "{repair:?}");
    check(&["verify", dir_arg], 0);
}
