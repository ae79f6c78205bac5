//! Many viewers gifting a few hosts at once, commands retried with the same
//! id, and the server killed in the middle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use commands::handler::{CommandError, Commands};
use events_schema::{Account, Envelope, Event};
use rand::Rng;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::world::{World, balance, balances, credited_positions, ctx, gift_positions, wait_for_credits};

const VIEWERS: usize = 50;
const HOSTS: usize = 3;
const GIFTS: usize = 2_000;
const RETRY_PERCENT: u32 = 20;
const UNIT_COINS: i64 = 7;

/// How every command was answered, by command id.
#[derive(Default)]
struct Answers {
    ok: HashSet<String>,
    failed: HashSet<String>,
    errors: Vec<String>,
}

async fn send_all(commands: &Commands, viewers: &[Uuid], streams: &[(Uuid, Uuid)], answers: Arc<Mutex<Answers>>) {
    let per_viewer = GIFTS / viewers.len();
    let mut tasks = Vec::new();
    for (v, viewer) in viewers.iter().copied().enumerate() {
        let commands = commands.clone();
        let streams = streams.to_vec();
        let answers = answers.clone();
        tasks.push(tokio::spawn(async move {
            for g in 0..per_viewer {
                let (stream_id, _) = streams[(v + g) % streams.len()];
                let key = format!("gift-{v}-{g}");
                let c = ctx(viewer, &key);
                let send = || commands.send_gift(&c, viewer, stream_id, "rose".into(), 1, UNIT_COINS);
                let retry = rand::rng().random_ratio(RETRY_PERCENT, 100);
                let results: Vec<Result<_, CommandError>> = if retry && g % 2 == 0 {
                    // Retried while the first is in flight.
                    let (a, b) = tokio::join!(send(), send());
                    vec![a, b]
                } else if retry {
                    // Retried after the first answer.
                    let a = send().await;
                    let b = send().await;
                    vec![a, b]
                } else {
                    vec![send().await]
                };
                let mut answers = answers.lock().await;
                for result in results {
                    match result {
                        Ok(_) => answers.ok.insert(key.clone()),
                        Err(e) => {
                            answers.errors.push(format!("{key}: {e}"));
                            answers.failed.insert(key.clone())
                        }
                    };
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("viewer task");
    }
}

async fn setup(world: &World) -> (Vec<Uuid>, Vec<(Uuid, Uuid)>) {
    let viewers: Vec<Uuid> = (0..VIEWERS).map(|_| Uuid::now_v7()).collect();
    for v in &viewers {
        world.fund(*v, 1_000_000).await;
    }
    let mut streams = Vec::new();
    for _ in 0..HOSTS {
        let host = Uuid::now_v7();
        streams.push((world.start_stream(host).await, host));
    }
    (viewers, streams)
}

/// What the log must show after the load: each accepted command once, no
/// commit without its record, exact balances.
fn check_log(events: &[(u64, Envelope)], answers: &Answers, viewers: &[Uuid], hosts: &[Uuid]) {
    let mut gifts_by_command: HashMap<&str, usize> = HashMap::new();
    let mut gift_position: HashMap<&str, u64> = HashMap::new();
    let mut records: HashMap<&str, (u64, &events_schema::CommandRecorded)> = HashMap::new();
    for (position, e) in events {
        match &e.event {
            Event::GiftSent(_) => {
                *gifts_by_command.entry(e.header.command_id.as_str()).or_default() += 1;
                gift_position.insert(e.header.command_id.as_str(), *position);
            }
            Event::CommandRecorded(r) if r.command_id.starts_with("gift-") => {
                assert!(records.insert(r.command_id.as_str(), (*position, r)).is_none(), "one record per command");
            }
            _ => {}
        }
    }
    assert_eq!(crate::world::unrecorded(events), 0, "every command's event has its record");
    for (command, position) in &gift_position {
        let (record_position, record) = records[command];
        // The record names its event, or follows it in one atomic batch.
        let names_it = record.event_positions.contains(position);
        let follows_it = record.event_positions.is_empty() && record_position == position + 1;
        assert!(names_it || follows_it, "{command}: its record points at its event");
    }
    for (command, count) in &gifts_by_command {
        assert_eq!(*count, 1, "{command} appended exactly once");
        assert!(records.contains_key(command), "{command}: no commit without its record (atomic batch)");
    }
    for command in &answers.ok {
        assert_eq!(gifts_by_command.get(command.as_str()), Some(&1), "{command} answered Ok is in the log once");
    }
    let b = balances(events);
    let sent: i64 = gifts_by_command.len() as i64 * UNIT_COINS;
    let spent: i64 = viewers.iter().map(|v| 1_000_000 - balance(&b, Account::Wallet(*v))).sum();
    assert_eq!(spent, sent, "viewers paid exactly for the gifts in the log");
    let host_share = UNIT_COINS * 7000 / 10_000;
    let earned: i64 = hosts.iter().map(|h| balance(&b, Account::Earnings(*h))).sum();
    assert_eq!(earned, gifts_by_command.len() as i64 * host_share, "hosts earned exactly their share");
    assert_eq!(balance(&b, Account::TransitGifts), 0, "every gift credited");
    let positions = credited_positions(events);
    let unique: HashSet<u64> = positions.iter().copied().collect();
    assert_eq!(unique.len(), positions.len(), "no gift credited twice");
    assert_eq!(positions, gift_positions(events), "every gift credited once");
}

#[tokio::test]
async fn fifty_viewers_gifting_three_hosts_with_retries_balance_exactly() {
    let world = World::start().await;
    let reactor = world.reactor(Default::default()).await;
    let (viewers, streams) = setup(&world).await;
    let answers = Arc::new(Mutex::new(Answers::default()));
    send_all(&world.commands, &viewers, &streams, answers.clone()).await;
    let answers = answers.lock().await;
    assert!(answers.failed.is_empty(), "no command fails without a fault: {:?}", answers.errors);
    assert_eq!(answers.ok.len(), GIFTS);
    let events = wait_for_credits(&world, Duration::from_secs(30)).await;
    let hosts: Vec<Uuid> = streams.iter().map(|(_, h)| *h).collect();
    check_log(&events, &answers, &viewers, &hosts);
    crate::handler::assert_chains(&events);
    reactor.shutdown().await;
}

#[tokio::test]
async fn a_server_killed_mid_load_loses_no_answered_command_and_leaves_no_partial_commit() {
    // Short timeouts and few retries, so that an outage of a few seconds
    // answers some commands with an error.
    let mut world = World::start_with(|mut c| {
        c.request_timeout_ms = 500;
        c.append_retry_max = 2;
        c.retry_delay_ms_max = 200;
        c
    })
    .await;
    let (viewers, streams) = setup(&world).await;
    let answers = Arc::new(Mutex::new(Answers::default()));
    let load = {
        let commands = world.commands.clone();
        let viewers = viewers.clone();
        let streams = streams.clone();
        let answers = answers.clone();
        tokio::spawn(async move { send_all(&commands, &viewers, &streams, answers).await })
    };
    // Kill the server once a third of the gifts are in, restart it shortly after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answers.lock().await.ok.len() < GIFTS / 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.server.kill9();
    // Time is the condition: the outage the writers must ride out.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    world.server.restart().await;
    load.await.expect("load finishes");
    let reactor = world.reactor(Default::default()).await;
    let events = wait_for_credits(&world, Duration::from_secs(60)).await;
    let answers = answers.lock().await;
    let hosts: Vec<Uuid> = streams.iter().map(|(_, h)| *h).collect();
    check_log(&events, &answers, &viewers, &hosts);
    crate::handler::assert_chains(&events);
    println!("kill -9 mid-load: {} answered ok, {} answered with an error", answers.ok.len(), answers.failed.len());
    assert!(!answers.failed.is_empty(), "the outage outlasted the retries: some commands failed");
    reactor.shutdown().await;
}
