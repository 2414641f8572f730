//! Power cuts at every sync, on a simulated disk (`SimDisk`), in the manner of
//! redb's `tests/crash_consistency.rs`.
//!
//! A workload (single publishes, keyed messages with headers, batches, a
//! consumer group committing, explicit syncs; two topics with small segments
//! so they roll) runs on a disk that dies at its Nth sync. The power is then
//! cut with several seeds (each unsynced page kept, lost or torn), the engine
//! reopens on what survived, and what recovery kept is checked against what
//! the workload was told: acknowledged records are there and identical,
//! offsets are dense, batches are whole, `verify` passes, the group's commit
//! is neither lost nor beyond the end. Then the recovered log takes new
//! records at the next offsets and survives a second cut, and a crash in the
//! middle of recovery loses nothing recovery must keep.
//!
//! Every broken rule counts as a violation, and the count must be 0.
//! `TOLLGATE_POWER_CUTS` sets how many cuts each workload gets (default 450:
//! three seeds at each of up to 150 cut points; larger values cut at every
//! sync, then add seeds).

use std::collections::{BTreeSet, HashSet};

#[allow(dead_code)] // each test binary uses some of it
#[path = "support/fixture.rs"]
mod fixture;
use fixture::{DATA, open_sim, sim_disk};
#[allow(dead_code)] // only `below` is used here
#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

use tollgate::{
    Durability, Engine, EngineConfig, Message, Offset, PublishError, Record, SimDisk, StartAt, Topic, TopicConfig,
};

/// Cuts taken, with different seeds, at each cut point (at least).
const SEEDS_PER_CUT: u64 = 3;
/// The group that commits during the workload (on the first topic).
const GROUP: &str = "billing";

/// Cuts per workload: `TOLLGATE_POWER_CUTS`, default 450.
fn cut_count() -> u64 {
    std::env::var("TOLLGATE_POWER_CUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(450)
}

#[test]
fn sync_topics_keep_every_acknowledged_record() {
    let setup = Setup { durability: [Durability::Sync, Durability::Sync], ops: 160, seed: 1, second_crash: false };
    sweep("sync", &setup);
}

#[test]
fn buffered_and_interval_topics_keep_a_prefix() {
    let setup = Setup {
        durability: [Durability::Buffered, Durability::Interval(std::time::Duration::from_millis(1))],
        ops: 160,
        seed: 2,
        second_crash: false,
    };
    sweep("buffered+interval", &setup);
}

/// Found the stale-index bug (`records_appended_to_a_reactivated_segment_stay_readable`)
/// at `TOLLGATE_POWER_CUTS=20000`, before it was fixed.
#[test]
fn sync_topics_survive_a_second_crash_while_publishing_after_recovery() {
    let setup = Setup { durability: [Durability::Sync, Durability::Sync], ops: 160, seed: 3, second_crash: true };
    sweep("sync, second crash", &setup);
}

/// As the `Sync` one above, for `Buffered` and `Interval` topics.
#[test]
fn buffered_topics_survive_a_second_crash_while_publishing_after_recovery() {
    let setup = Setup {
        durability: [Durability::Buffered, Durability::Interval(std::time::Duration::from_millis(1))],
        ops: 160,
        seed: 4,
        second_crash: true,
    };
    sweep("buffered+interval, second crash", &setup);
}

#[test]
fn full_disk_fails_publishes_and_loses_nothing_acknowledged() {
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.create_topic("t", config(0, Durability::Sync)).unwrap();
    for i in 0..20 {
        topic.publish(format!("before {i}")).unwrap();
    }
    // Room for a few more one-page segments (the topic holds about 4 KiB
    // now), then no more.
    disk.set_capacity(Some(20_000));
    let mut acked = 20;
    let error = loop {
        match topic.publish(vec![b'x'; 500]) {
            Ok(offset) => {
                assert_eq!(offset, Offset::new(acked));
                acked += 1;
            }
            Err(e) => break e,
        }
        assert!(acked < 1000, "the disk never filled");
    };
    assert!(matches!(&error, PublishError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull), "{error}");
    // A full disk is not a crash: freeing space lets publishing go on.
    disk.set_capacity(None);
    let after = topic.publish(b"after").unwrap();
    assert_eq!(after, Offset::new(acked));
    for seed in 0..8 {
        let cut = disk.power_cut(seed);
        let engine = open_sim(&cut);
        let topic = engine.topic("t").unwrap();
        assert_eq!(topic.info().next, Offset::new(acked + 1));
        assert_eq!(topic.verify().unwrap(), acked + 1);
        assert_eq!(topic.read(after).unwrap().payload().as_ref(), b"after");
    }
}

#[test]
fn concurrent_sync_publishers_keep_every_acknowledged_record() {
    const PUBLISHERS: usize = 3;
    const PUBLISHES: usize = 30;
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let run = |disk: &SimDisk| -> Option<(Engine, Vec<Vec<Acked>>)> {
        let engine = Engine::open_sim(disk, DATA, EngineConfig::default()).ok()?;
        let topic = engine.create_topic("t", config(0, Durability::Sync)).ok()?;
        let acked = std::thread::scope(|scope| {
            let publishers: Vec<_> = (0..PUBLISHERS)
                .map(|t| {
                    let topic = topic.clone();
                    scope.spawn(move || concurrent_publisher(&topic, t, PUBLISHES))
                })
                .collect();
            publishers.into_iter().map(|p| p.join().unwrap()).collect()
        });
        Some((engine, acked))
    };
    let total = {
        let disk = sim_disk();
        drop(run(&disk));
        disk.syncs()
    };
    let points = cut_points(total);
    let seeds = (cut_count() / points.len() as u64).max(SEEDS_PER_CUT);
    for &budget in &points {
        let disk = sim_disk();
        if let Some(n) = budget {
            disk.fail_after_syncs(n);
        }
        let (engine, acked) = run(&disk).unzip();
        let acked = acked.unwrap_or_default();
        drop(engine);
        for s in 0..seeds {
            report.cuts += 1;
            let point = budget.unwrap_or(total + 1);
            let context = format!("concurrent: cut at sync {point}, seed {s}");
            check_concurrent(&disk.power_cut(point << 8 ^ s), &acked, &mut report, &context);
        }
    }
    println!(
        "power cuts (concurrent sync publishers): {} syncs, {} cut points, {} cuts, {} records checked, {} \
         violations, {:.1?}",
        total,
        points.len(),
        report.cuts,
        report.records_checked,
        report.violations,
        started.elapsed()
    );
    assert_eq!(report.violations, 0, "violations, first ones:\n{}", report.first.join("\n"));
}

/// Regression: `Engine::open_on` created a missing data directory with
/// `create_dir_all` and never synced the directory that holds it, so a power
/// cut could take the whole data directory, acknowledged records and all.
#[test]
fn data_directory_created_by_open_survives_a_power_cut() {
    let disk = SimDisk::new();
    disk.create_dir_all_durable("/srv").unwrap();
    let engine = Engine::open_sim(&disk, "/srv/data", EngineConfig::default()).unwrap();
    let topic = engine.create_topic("t", config(0, Durability::Sync)).unwrap();
    topic.publish(b"acknowledged").unwrap();
    let cut = disk.power_cut(0);
    let engine = Engine::open_sim(&cut, "/srv/data", EngineConfig::default()).unwrap();
    assert_eq!(engine.topics().unwrap(), ["t"], "the topic (and the directory) are gone");
}

/// Regression (stale index): recovery can make a segment that was already
/// sealed the active one again, when the segment after it was
/// lost; the sealed segment's `.index` file stays. Publishing then appends
/// to that segment past the end the index records. If the power is cut again
/// after the next roll but before that segment is sealed again (index
/// rewritten), and the next segment survives, the segment is no longer the
/// active one, and `TopicInner::load_slot` (src/log/topic.rs) trusts the stale
/// index because its end is within the file: the segment's records past the
/// old end, acknowledged `Sync` publishes, could not be read. Fixed by
/// checking a stored index against its segment before trusting it.
#[test]
fn records_appended_to_a_reactivated_segment_stay_readable() {
    let sync = config(0, Durability::Sync);
    let big = vec![b'b'; 1000];
    // Offsets 0-2 fill most of a one-page segment; offset 3 rolls to the
    // next one, and the disk dies after sealing the first (index written,
    // checkpoint moved) but before the new segment's first flush.
    let disk = sim_disk();
    let engine = open_sim(&disk);
    let topic = engine.create_topic("t", sync).unwrap();
    for _ in 0..3 {
        topic.publish(&big).unwrap();
    }
    disk.fail_after_syncs(5);
    assert!(topic.publish(&big).is_err());
    // A cut that loses the new segment: recovery makes the first one active again.
    let (engine, topic, disk) = (0..1000)
        .find_map(|seed| {
            let cut = disk.power_cut(seed);
            let engine = open_sim(&cut);
            let topic = engine.topic("t").unwrap();
            (topic.info().segments == 1).then_some((engine, topic, cut))
        })
        .expect("some seed loses the unsynced segment");
    assert_eq!(topic.info().next, Offset::new(3));
    // Offset 3 fits in the reactivated segment; offset 4 rolls, and the disk
    // dies before the segment holding 3 is sealed again.
    assert_eq!(topic.publish(b"small").unwrap(), Offset::new(3));
    disk.fail_after_syncs(1);
    assert!(topic.publish(&big).is_err());
    drop((topic, engine));
    // A cut where the segment holding 4 survived (its unsynced page was
    // written back): 3 was acknowledged and must be readable.
    let (engine, topic) = (0..1000)
        .find_map(|seed| {
            let cut = disk.power_cut(seed);
            let engine = open_sim(&cut);
            let topic = engine.topic("t").unwrap();
            (topic.info().next == Offset::new(5)).then_some((engine, topic))
        })
        .expect("some seed keeps the unsynced segment");
    assert_eq!(topic.read(Offset::new(3)).map(|r| r.payload().to_vec()), Ok(b"small".to_vec()));
    assert_eq!(topic.verify(), Ok(5));
    drop(engine);
}

/// What one sweep runs: two topics' durabilities, the workload's length and seed.
struct Setup {
    durability: [Durability; 2],
    ops: usize,
    seed: u64,
    /// After recovery, let the disk die again while publishing.
    second_crash: bool,
}

const TOPICS: [&str; 2] = ["orders", "audit"];

/// Small segments so that both topics roll many times: one page, and four
/// (with messages up to five kilobytes, so frames straddle pages).
fn config(topic: usize, durability: Durability) -> TopicConfig {
    if topic == 0 {
        TopicConfig { durability, segment_bytes: 4096, max_message_bytes: 1024, ..TopicConfig::default() }
    } else {
        TopicConfig { durability, segment_bytes: 16384, max_message_bytes: 6000, ..TopicConfig::default() }
    }
}

/// Runs the workload once to count its syncs, then once per cut point, dying
/// there, and checks several cuts of each.
fn sweep(name: &str, setup: &Setup) {
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let total = {
        let disk = sim_disk();
        let (engine, _) = run_workload(&disk, setup, None, &mut report);
        drop(engine);
        disk.syncs()
    };
    let points = cut_points(total);
    let seeds = (cut_count() / points.len() as u64).max(SEEDS_PER_CUT);
    for &budget in &points {
        let disk = sim_disk();
        let (engine, models) = run_workload(&disk, setup, budget, &mut report);
        let point = budget.unwrap_or(total + 1);
        let cut_all = || -> Vec<(u64, SimDisk)> {
            (0..seeds)
                .map(|s| {
                    let seed = setup.seed << 48 ^ point << 8 ^ s;
                    (seed, disk.power_cut(seed))
                })
                .collect()
        };
        // With a budget the engine is shut down first, so that the disk dies
        // inside the clean shutdown when the workload did not use it all up
        // (a dead disk makes the shutdown change nothing). Without one, the
        // power goes while the engine is open.
        let cuts = if budget.is_some() {
            drop(engine);
            cut_all()
        } else {
            let cuts = cut_all();
            drop(engine);
            cuts
        };
        for (seed, cut) in cuts {
            report.cuts += 1;
            let context = format!("{name}: cut at sync {point}, seed {seed:#x}");
            if seed % 2 == 0 {
                continue_after_recovery(&cut, setup, &models, seed, &mut report, &context);
            } else {
                crash_during_recovery(&cut, setup, &models, seed, &mut report, &context);
            }
        }
    }
    println!(
        "power cuts ({name}): {} syncs in the workload, {} cut points, {} cuts, {} reopens, {} records checked, \
         {} logs cut by recovery, {} records not recovered, {} violations, {:.1?}",
        total,
        points.len(),
        report.cuts,
        report.reopens,
        report.records_checked,
        report.logs_cut,
        report.unacknowledged_lost,
        report.violations,
        started.elapsed(),
    );
    assert_eq!(report.violations, 0, "violations, first ones:\n{}", report.first.join("\n"));
}

/// Cut points: every sync from the first (the engine dies opening) to the
/// last if the cuts allow it, else an even spread; and the end of the
/// workload with no failure at all (`None`).
fn cut_points(total: u64) -> Vec<Option<u64>> {
    let wanted = (cut_count() / SEEDS_PER_CUT).max(1);
    let mut points: Vec<Option<u64>> = if wanted > total {
        (0..=total).map(Some).collect()
    } else {
        (0..wanted).map(|i| Some(i * (total + 1) / wanted)).collect()
    };
    points.dedup();
    points.push(None);
    points
}

/// After the first cut: reopen and check; publish more at the next offsets,
/// then sync; cut again, sometimes after a clean shutdown, and check again.
/// With `setup.second_crash` the disk dies again somewhere in the publishing
/// and syncing, and the second cut is taken there.
fn continue_after_recovery(
    disk: &SimDisk,
    setup: &Setup,
    models: &[Model; 2],
    seed: u64,
    report: &mut Report,
    context: &str,
) {
    let Some((engine, topics, ends)) = reopen_and_check(disk, setup, models, report, context) else { return };
    let mut models = models.clone();
    let mut rng = Rng::new(seed);
    let death = setup.second_crash.then(|| disk.syncs() + rng.below(24));
    if let Some(at) = death {
        disk.fail_after_syncs(at - disk.syncs());
    }
    let failed = |what: String, report: &mut Report| {
        if death.is_none_or(|at| disk.syncs() < at) {
            report.violation(format!("{context}: {what}"));
        }
    };
    'publishing: for (i, topic) in topics.iter().enumerate() {
        models[i].cut_to(ends[i]);
        for _ in 0..6 {
            let batch = rng.below(3) == 0;
            let messages = random_messages(&mut rng, i, models[i].records.len(), if batch { 3 } else { 1 });
            let first = models[i].records.len() as u64;
            if let Err(e) = publish(topic, &mut models[i], setup.durability[i], messages, batch) {
                failed(format!("publishing after recovery at offset {first} failed: {e}"), report);
                break 'publishing;
            }
        }
        if let Err(e) = topic.sync() {
            failed(format!("sync after recovery failed: {e}"), report);
            break;
        }
        models[i].floor = models[i].records.len() as u64;
    }
    drop(topics);
    let clean = seed.is_multiple_of(4) && death.is_none();
    let second = if clean {
        drop(engine);
        disk.power_cut(seed + 1)
    } else {
        let cut = disk.power_cut(seed + 1);
        drop(engine);
        cut
    };
    let context = match death {
        _ if clean => format!("{context}, then a second cut after a clean shutdown"),
        Some(at) => format!("{context}, then a second cut at sync {at} while publishing"),
        None => format!("{context}, then a second cut"),
    };
    reopen_and_check(&second, setup, &models, report, &context);
}

/// After the first cut: let the disk die again somewhere inside recovery
/// (or the checks after it), cut once more, and check against the same
/// model: an interrupted recovery must not lose what recovery must keep.
fn crash_during_recovery(
    disk: &SimDisk,
    setup: &Setup,
    models: &[Model; 2],
    seed: u64,
    report: &mut Report,
    context: &str,
) {
    let budget = Rng::new(seed).below(40);
    disk.fail_after_syncs(budget);
    if let Ok(engine) = Engine::open_sim(disk, DATA, EngineConfig::default()) {
        for (i, name) in TOPICS.iter().enumerate() {
            if let Ok(topic) = open_topic(&engine, name, config(i, setup.durability[i])) {
                let _ = topic.subscribe(GROUP);
            }
        }
    }
    let second = disk.power_cut(seed + 1);
    let context = format!("{context}, crashed after {budget} syncs of recovery, cut again");
    reopen_and_check(&second, setup, models, report, &context);
}

/// Opens the engine on `disk` and checks both topics against their models.
/// Returns the engine, the topics and where their logs now end.
fn reopen_and_check(
    disk: &SimDisk,
    setup: &Setup,
    models: &[Model; 2],
    report: &mut Report,
    context: &str,
) -> Option<(Engine, Vec<Topic>, [u64; 2])> {
    report.reopens += 1;
    let engine = match Engine::open_sim(disk, DATA, EngineConfig::default()) {
        Ok(engine) => engine,
        Err(e) => {
            report.violation(format!("{context}: reopening failed: {e}"));
            return None;
        }
    };
    let mut topics = Vec::new();
    let mut ends = [0; 2];
    for (i, name) in TOPICS.iter().enumerate() {
        let config = config(i, setup.durability[i]);
        let topic = match open_topic(&engine, name, config) {
            Ok(topic) => topic,
            Err(e) => {
                report.violation(format!("{context}: opening topic {name} failed: {e}"));
                return None;
            }
        };
        if topic.info().config != config {
            report.violation(format!("{context}: topic {name} came back with {:?}", topic.info().config));
        }
        ends[i] = check_topic(&topic, &models[i], i == 0, report, context);
        topics.push(topic);
    }
    Some((engine, topics, ends))
}

/// Checks one recovered topic; returns where its log ends.
fn check_topic(topic: &Topic, model: &Model, has_group: bool, report: &mut Report, context: &str) -> u64 {
    let name = topic.name().to_owned();
    let info = topic.info();
    let next = info.next.get();
    let published = model.records.len() as u64;
    report.unacknowledged_lost += published.saturating_sub(next);
    report.logs_cut += u64::from(topic.recovery_report().cut.is_some());
    if next < model.floor {
        report.violation(format!(
            "{context}, {name}: log ends at {next}, but records up to {} were durable",
            model.floor
        ));
    }
    if next > published {
        report.violation(format!("{context}, {name}: log ends at {next}, only {published} records were published"));
    }
    if !model.boundaries.contains(&next) {
        report.violation(format!("{context}, {name}: log ends at {next}, inside a batch"));
    }
    if info.oldest != Offset::new(0) {
        report.violation(format!("{context}, {name}: oldest offset is {}, nothing was deleted", info.oldest));
    }
    for offset in 0..next.min(published) {
        match topic.read(Offset::new(offset)) {
            Ok(record) if model.records[offset as usize].matches(&record) => report.records_checked += 1,
            Ok(record) => report.violation(format!("{context}, {name}: record {offset} differs: {record:?}")),
            Err(e) => report.violation(format!("{context}, {name}: reading {offset} failed: {e}")),
        }
    }
    match topic.verify() {
        Ok(count) if count == next => {}
        Ok(count) => report.violation(format!("{context}, {name}: verify counted {count} records, expected {next}")),
        Err(e) => report.violation(format!("{context}, {name}: verify failed: {e}")),
    }
    // Dense, in order, through a subscription too.
    match topic.subscribe_with("checker", StartAt::Earliest) {
        Ok(mut checker) => {
            for offset in 0..next {
                match checker.next() {
                    Ok(Some(record)) if record.offset() == Offset::new(offset) => {}
                    Ok(Some(record)) => {
                        report.violation(format!("{context}, {name}: expected {offset}, read {}", record.offset()));
                        break;
                    }
                    Ok(None) => {
                        report.violation(format!("{context}, {name}: subscription ended at {offset} of {next}"));
                        break;
                    }
                    Err(e) => {
                        report.violation(format!("{context}, {name}: subscription failed at {offset}: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => report.violation(format!("{context}, {name}: subscribing failed: {e}")),
    }
    if has_group {
        match topic.subscribe(GROUP) {
            Ok(group) => {
                let committed = group.committed().get();
                let floor = model.commit_ok.min(next);
                if committed < floor || committed > next || committed > model.commit_tried {
                    report.violation(format!(
                        "{context}, {name}: group committed {committed}; last acknowledged commit {}, largest \
                         tried {}, log end {next}",
                        model.commit_ok, model.commit_tried
                    ));
                }
            }
            Err(e) => report.violation(format!("{context}, {name}: subscribing {GROUP} failed: {e}")),
        }
    }
    next
}

/// The topic `name`, created with `config` if it does not exist (a crash may
/// have come before its creation was durable).
fn open_topic(engine: &Engine, name: &str, config: TopicConfig) -> Result<Topic, tollgate::TopicError> {
    if engine.topics()?.iter().any(|t| t == name) { engine.topic(name) } else { engine.create_topic(name, config) }
}

/// Runs the workload on `disk`, which dies after `budget` syncs (never with
/// `None`), until it ends or something fails. Returns the engine, still
/// open, and what each topic was told.
fn run_workload(
    disk: &SimDisk,
    setup: &Setup,
    budget: Option<u64>,
    report: &mut Report,
) -> (Option<Engine>, [Model; 2]) {
    if let Some(n) = budget {
        disk.fail_after_syncs(n);
    }
    let dead = || budget.is_some_and(|n| disk.syncs() >= n);
    let mut models = [Model::default(), Model::default()];
    let Ok(engine) = Engine::open_sim(disk, DATA, EngineConfig::default()) else { return (None, models) };
    let mut topics = Vec::new();
    for (i, name) in TOPICS.iter().enumerate() {
        match engine.create_topic(name, config(i, setup.durability[i])) {
            Ok(topic) => topics.push(topic),
            Err(_) => return (Some(engine), models),
        }
    }
    let Ok(mut group) = topics[0].subscribe(GROUP) else { return (Some(engine), models) };
    let mut rng = Rng::new(setup.seed);
    for _ in 0..setup.ops {
        // Once the machine is dead nothing more happens on it; in particular
        // no publish into memory that no sync will ever reach.
        if dead() {
            break;
        }
        let i = usize::from(rng.below(4) == 0);
        let (topic, model) = (&topics[i], &mut models[i]);
        let result = match rng.below(20) {
            0..=11 => {
                let messages = random_messages(&mut rng, i, model.records.len(), 1);
                publish(topic, model, setup.durability[i], messages, false)
            }
            12..=15 => {
                let count = 2 + rng.below(4) as usize;
                let messages = random_messages(&mut rng, i, model.records.len(), count);
                publish(topic, model, setup.durability[i], messages, true)
            }
            16..=18 => consume_and_commit(&mut group, &mut models[0], rng.below(8), report),
            _ => {
                let end = model.records.len() as u64;
                topic.sync().map(|()| model.floor = end).map_err(|e| e.to_string())
            }
        };
        if result.is_err() {
            break;
        }
    }
    drop(group);
    (Some(engine), models)
}

/// Publishes `messages` (as one batch, or one message alone) and updates the
/// model: the records are possible either way, and durable on success if
/// the topic syncs every publish.
fn publish(
    topic: &Topic,
    model: &mut Model,
    durability: Durability,
    messages: Vec<Expected>,
    batch: bool,
) -> Result<(), String> {
    let first = model.records.len() as u64;
    let end = first + messages.len() as u64;
    model.records.extend(messages.iter().cloned());
    model.boundaries.insert(end);
    let result = if batch {
        topic.publish_batch(messages.iter().map(Expected::message).collect::<Vec<_>>()).map(|range| range.start)
    } else if messages[0].key.is_none() && messages[0].headers.is_empty() {
        topic.publish(&messages[0].payload)
    } else {
        topic.publish_message(messages[0].message())
    };
    match result {
        Ok(offset) if offset == Offset::new(first) => {
            if durability == Durability::Sync {
                model.floor = end;
            }
            Ok(())
        }
        Ok(offset) => panic!("published at {offset}, expected {first}: offsets are not dense"),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads up to `count` records with the group, checking each, and commits.
fn consume_and_commit(
    group: &mut tollgate::Subscription,
    model: &mut Model,
    count: u64,
    report: &mut Report,
) -> Result<(), String> {
    for _ in 0..count {
        match group.next() {
            Ok(Some(record)) => {
                let expected = model.records.get(record.offset().get() as usize);
                if !expected.is_some_and(|e| e.matches(&record)) {
                    report.violation(format!("before any cut: record {} read back wrong", record.offset()));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let at = group.position().get();
    model.commit_tried = model.commit_tried.max(at);
    group.commit().map_err(|e| e.to_string())?;
    model.commit_ok = at;
    Ok(())
}

/// What a topic was told during the workload.
#[derive(Clone, Debug)]
struct Model {
    /// Every record a publish tried to write, in offset order; a publish that
    /// failed is last.
    records: Vec<Expected>,
    /// Offsets at which frames end: a recovered log ends at one of them.
    boundaries: BTreeSet<u64>,
    /// Records below this offset must survive.
    floor: u64,
    /// The group's last commit that returned Ok, and the largest one tried.
    commit_ok: u64,
    commit_tried: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model { records: Vec::new(), boundaries: BTreeSet::from([0]), floor: 0, commit_ok: 0, commit_tried: 0 }
    }
}

impl Model {
    /// The model after recovery ended the log at `end`: recovery syncs what
    /// it keeps, and lowers a group's commit past the end to the end.
    fn cut_to(&mut self, end: u64) {
        self.records.truncate(end as usize);
        self.boundaries.retain(|&b| b <= end);
        self.floor = end;
        self.commit_ok = self.commit_ok.min(end);
        self.commit_tried = self.commit_tried.min(end);
    }
}

/// A published message as the test remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    payload: Vec<u8>,
    key: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Expected {
    fn message(&self) -> Message {
        let mut message = Message::new(self.payload.clone());
        if let Some(key) = &self.key {
            message = message.key(key.clone());
        }
        for (name, value) in &self.headers {
            message = message.header(name.clone(), value.clone());
        }
        message
    }

    fn matches(&self, record: &Record) -> bool {
        record.payload().as_ref() == self.payload.as_slice()
            && record.key() == self.key.as_deref()
            && record.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).eq(self.headers.iter().cloned())
    }
}

/// `count` messages for topic `topic`, the first to get offset `first`: a
/// payload that names the topic and offset, of a random size (up to 900
/// bytes on the first topic, 5000 on the second), sometimes a key and headers.
fn random_messages(rng: &mut Rng, topic: usize, first: usize, count: usize) -> Vec<Expected> {
    (0..count)
        .map(|i| {
            let offset = first + i;
            let mut payload = format!("{topic}:{offset}:").into_bytes();
            let size = match (rng.below(4), count > 1) {
                (_, true) | (0, _) => rng.below(200),
                (1, _) => rng.below(20),
                _ if topic == 0 => 200 + rng.below(700),
                _ => 200 + rng.below(4800),
            };
            payload.extend((0..size).map(|b| (offset as u64 * 31 + b) as u8));
            let key = (rng.below(3) == 0).then(|| format!("key-{}", rng.below(1000)));
            let headers =
                (0..rng.below(3)).map(|h| (format!("h{h}"), (0..rng.below(24)).map(|b| b as u8).collect())).collect();
            Expected { payload, key, headers }
        })
        .collect()
}

/// Violations and counts over a sweep.
#[derive(Default)]
struct Report {
    violations: u64,
    first: Vec<String>,
    cuts: u64,
    reopens: u64,
    records_checked: u64,
    /// Records published but not recovered (allowed when not durable).
    unacknowledged_lost: u64,
    /// Reopens where recovery cut a topic's log at a torn or missing frame.
    logs_cut: u64,
}

impl Report {
    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.first.len() < 20 {
            self.first.push(what);
        }
    }
}

/// A publish one of the concurrent publishers was told succeeded: its
/// offsets and payloads.
struct Acked {
    first: u64,
    payloads: Vec<Vec<u8>>,
}

/// Publishes `count` times (singles and batches) until one fails; returns
/// the acknowledged ones. Payloads are `publisher:publish:index:size:`,
/// padded, so any record identifies its publish and its place in the batch.
fn concurrent_publisher(topic: &Topic, publisher: usize, count: usize) -> Vec<Acked> {
    let mut rng = Rng::new(publisher as u64 + 100);
    let mut acked = Vec::new();
    for publish in 0..count {
        let size = 1 + rng.below(4) as usize;
        let payloads: Vec<Vec<u8>> = (0..size)
            .map(|index| {
                let mut payload = format!("{publisher}:{publish}:{index}:{size}:").into_bytes();
                payload.resize(payload.len() + rng.below(300) as usize, b'.');
                payload
            })
            .collect();
        let result = if size == 1 {
            topic.publish(&payloads[0])
        } else {
            topic.publish_batch(payloads.iter().map(|p| Message::new(p.clone())).collect::<Vec<_>>()).map(|r| r.start)
        };
        match result {
            Ok(first) => acked.push(Acked { first: first.get(), payloads }),
            Err(_) => break,
        }
    }
    acked
}

/// Reopens after a cut of the concurrent workload: every acknowledged
/// record is there, and every record there belongs to a whole publish.
fn check_concurrent(disk: &SimDisk, acked: &[Vec<Acked>], report: &mut Report, context: &str) {
    let engine = match Engine::open_sim(disk, DATA, EngineConfig::default()) {
        Ok(engine) => engine,
        Err(e) => return report.violation(format!("{context}: reopening failed: {e}")),
    };
    let topic = match open_topic(&engine, "t", config(0, Durability::Sync)) {
        Ok(topic) => topic,
        Err(e) => return report.violation(format!("{context}: opening the topic failed: {e}")),
    };
    let next = topic.info().next.get();
    for publish in acked.iter().flatten() {
        for (i, payload) in publish.payloads.iter().enumerate() {
            let offset = publish.first + i as u64;
            match topic.read(Offset::new(offset)) {
                Ok(record) if record.payload().as_ref() == payload.as_slice() => report.records_checked += 1,
                Ok(_) => report.violation(format!("{context}: acknowledged record {offset} differs")),
                Err(e) => report.violation(format!("{context}: acknowledged record {offset}: {e}")),
            }
        }
    }
    let mut seen = HashSet::new();
    let mut offset = 0;
    while offset < next {
        let identity = topic.read(Offset::new(offset)).ok().and_then(|r| {
            let text = String::from_utf8_lossy(r.payload()).into_owned();
            let fields: Vec<usize> = text.split(':').take(4).map(|f| f.parse().ok()).collect::<Option<_>>()?;
            (fields.len() == 4).then(|| (fields[0], fields[1], fields[2], fields[3]))
        });
        let Some((publisher, publish, 0, size)) = identity else {
            return report.violation(format!("{context}: record {offset} does not start a publish: {identity:?}"));
        };
        if !seen.insert((publisher, publish)) {
            report.violation(format!("{context}: publish {publisher}:{publish} is in the log twice"));
        }
        for index in 1..size as u64 {
            let prefix = format!("{publisher}:{publish}:{index}:{size}:");
            let whole = offset + index < next
                && topic.read(Offset::new(offset + index)).is_ok_and(|r| r.payload().starts_with(prefix.as_bytes()));
            if !whole {
                report.violation(format!("{context}: batch {publisher}:{publish} at {offset} is not whole"));
            }
        }
        offset += size as u64;
    }
    match topic.verify() {
        Ok(count) if count == next => {}
        other => report.violation(format!("{context}: verify gave {other:?}, the log ends at {next}")),
    }
}
