//! The gift reactor: exactly once through crashes and with two instances.

use std::time::Duration;

use commands::reactor::ReactorConfig;
use events_schema::Account;
use uuid::Uuid;

use crate::world::{World, balance, balances, credited_positions, ctx, gift_positions, wait_for_credits};

async fn gifts(world: &World, viewers: usize, per_viewer: usize, hosts: &[(Uuid, Uuid)]) {
    let mut tasks = Vec::new();
    for v in 0..viewers {
        let viewer = Uuid::now_v7();
        world.fund(viewer, 100_000).await;
        let commands = world.commands.clone();
        let hosts = hosts.to_vec();
        tasks.push(tokio::spawn(async move {
            for g in 0..per_viewer {
                let (stream_id, _) = hosts[(v + g) % hosts.len()];
                let c = ctx(viewer, &format!("g-{g}"));
                commands.send_gift(&c, viewer, stream_id, "rose".into(), 1, 13).await.expect("gift sent");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

async fn hosts(world: &World, n: usize) -> Vec<(Uuid, Uuid)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let host = Uuid::now_v7();
        out.push((world.start_stream(host).await, host));
    }
    out
}

fn assert_exactly_once(events: &[(u64, events_schema::Envelope)], hosts: &[(Uuid, Uuid)]) {
    let credited = credited_positions(events);
    assert_eq!(credited, gift_positions(events), "every gift credited exactly once");
    let b = balances(events);
    let earned: i64 = hosts.iter().map(|(_, h)| balance(&b, Account::Earnings(*h))).sum();
    assert_eq!(earned, credited.len() as i64 * (13 * 7000 / 10_000));
    assert_eq!(balance(&b, Account::TransitGifts), 0);
}

fn quick(config: ReactorConfig) -> ReactorConfig {
    ReactorConfig { lease_ttl: Duration::from_secs(1), ..config }
}

#[tokio::test]
async fn a_reactor_crashing_between_append_and_ack_never_credits_twice() {
    let world = World::start().await;
    let hosts = hosts(&world, 3).await;
    gifts(&world, 10, 30, &hosts).await;
    // Small batches; the first instance dies right after its first credit
    // commits, before acknowledging the batch.
    let crashing = world
        .reactor(quick(ReactorConfig { batch_size_max: 7, crash_after_commits: Some(1), ..Default::default() }))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !crashing.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crashing.is_finished(), "the reactor crashed on purpose");
    // It crashed after its first batch's credits, before saving the checkpoint.
    assert!(crashing.stats().commits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // The checkpoint it saved (if any) is before the gifts it credited last:
    // the next instance reads them again.
    let saved = commands::reactor::saved_checkpoint(world.log.client(), "gift-reactor").await.expect("lease");
    let credited_last = world
        .read_all()
        .await
        .iter()
        .filter_map(|(_, e)| match &e.event {
            events_schema::Event::GiftsReceived(r) => r.gifts.iter().map(|g| g.source_position).max(),
            _ => None,
        })
        .max()
        .expect("a credit before the crash");
    assert!(saved.unwrap_or(0) < credited_last, "saved {saved:?}, credited up to {credited_last}");
    drop(crashing);
    // The next instance gets the same batch again, and more.
    let reactor = world.reactor(quick(ReactorConfig { batch_size_max: 7, ..Default::default() })).await;
    let events = wait_for_credits(&world, Duration::from_secs(30)).await;
    assert_exactly_once(&events, &hosts);
    reactor.shutdown().await;
}

/// Reactors killed one after another under load.
const KILLS: u64 = 5;
/// How long each killed reactor lives, at most.
const LIFETIME_MS_MAX: u64 = 500;
/// The largest batch a killed reactor takes.
const KILLED_BATCH_SIZE_MAX: usize = 20;

/// The seed of a randomised test: `HALOBUZZ_TEST_SEED` when set (to
/// replay a failure), else a random one; printed either way, so that a
/// failing run's output names the seed that replays it.
fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("HALOBUZZ_TEST_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("HALOBUZZ_TEST_SEED={text:?} is not a u64")),
        Err(_) => rand::random(),
    };
    println!("{test}: seed {seed} (replay: HALOBUZZ_TEST_SEED={seed} cargo test -p commands --test it {test})");
    seed
}

/// Each reactor lives a random time (and takes random batches) before it
/// is killed, while viewers send gifts. The seed fixes the schedule of
/// kills; where in the log each kill lands also depends on the machine's
/// speed, so a replay repeats the schedule, not necessarily the exact
/// positions.
#[tokio::test]
async fn a_reactor_killed_at_random_points_under_load_credits_exactly_once() {
    use rand::{Rng, SeedableRng};
    let seed = test_seed("a_reactor_killed_at_random_points_under_load_credits_exactly_once");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let schedule: Vec<(u64, usize)> = (0..KILLS)
        .map(|_| (rng.random_range(20..=LIFETIME_MS_MAX), rng.random_range(1..=KILLED_BATCH_SIZE_MAX)))
        .collect();
    println!("kills (lifetime ms, batch size): {schedule:?}");
    let world = World::start().await;
    let hosts = hosts(&world, 3).await;
    let sender = gifts(&world, 20, 25, &hosts);
    let killer = async {
        for (lifetime_ms, batch_size_max) in &schedule {
            let reactor =
                world.reactor(quick(ReactorConfig { batch_size_max: *batch_size_max, ..Default::default() })).await;
            tokio::time::sleep(Duration::from_millis(*lifetime_ms)).await;
            reactor.kill();
        }
    };
    tokio::join!(sender, killer);
    let reactor = world.reactor(quick(ReactorConfig::default())).await;
    let events = wait_for_credits(&world, Duration::from_secs(30)).await;
    assert_exactly_once(&events, &hosts);
    reactor.shutdown().await;
}

#[tokio::test]
async fn two_reactors_at_once_credit_exactly_once_and_a_standby_takes_over() {
    let world = World::start().await;
    let hosts = hosts(&world, 3).await;
    let a = world.reactor(quick(ReactorConfig::default())).await;
    let b = world.reactor(quick(ReactorConfig::default())).await;
    gifts(&world, 10, 20, &hosts).await;
    let events = wait_for_credits(&world, Duration::from_secs(30)).await;
    assert_exactly_once(&events, &hosts);
    let (ca, cb) = (
        a.stats().commits.load(std::sync::atomic::Ordering::Relaxed),
        b.stats().commits.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(ca == 0 || cb == 0, "only the lease holder works: {ca} and {cb} commits");

    // The active one dies; the standby takes over within seconds.
    let (active, standby) = if ca > 0 { (a, b) } else { (b, a) };
    active.kill();
    let started = tokio::time::Instant::now();
    gifts(&world, 5, 4, &hosts).await;
    let events = wait_for_credits(&world, Duration::from_secs(30)).await;
    assert_exactly_once(&events, &hosts);
    assert!(standby.stats().commits.load(std::sync::atomic::Ordering::Relaxed) > 0, "the standby took over");
    println!("standby took over and caught up in {:?}", started.elapsed());
    standby.shutdown().await;
}
