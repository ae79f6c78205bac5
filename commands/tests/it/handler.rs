//! The command handlers against a real server: every command of the design,
//! uniqueness through the log, idempotency beyond the duplicate window.

use std::time::Duration;

use commands::handler::CommandError;
use domain::ledger::LedgerCommand;
use domain::stream::StreamCommand;
use domain::user::{ChangeRoles, Register};
use events_schema::{Account, Event, Role};
use uuid::Uuid;

use crate::support::{Spy, SpyLog};
use crate::world::{World, admin, balance, balances, config, ctx, wait_for_credits};

fn register(user_id: Uuid, email: &str, username: &str) -> Register {
    Register {
        user_id,
        email: email.into(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        admin_emails: vec![],
    }
}

fn code(result: Result<commands::handler::Outcome, CommandError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(CommandError::Domain(e)) => e.code().into(),
        Err(other) => other.to_string(),
    }
}

#[tokio::test]
async fn every_command_of_the_design_runs_against_the_log() {
    let world = World::start().await;
    let reactor = world.reactor(Default::default()).await;
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    let c = &world.commands;

    // Users, with the email and username claimed in the log.
    let ok = c.register(&ctx(viewer, "reg"), register(viewer, "Vee@Example.com", "vee")).await.expect("registered");
    assert_eq!(ok.events.len(), 3, "the user and two reservations");
    c.register(&ctx(host, "reg"), register(host, "boss@halobuzz.com", "host")).await.expect("registered");
    let dup_email = c.register(&ctx(Uuid::now_v7(), "reg"), register(Uuid::now_v7(), "vee@example.com", "other")).await;
    assert_eq!(code(dup_email), "email_taken");
    let dup_name = c.register(&ctx(Uuid::now_v7(), "reg"), register(Uuid::now_v7(), "new@example.com", "VEE")).await;
    assert_eq!(code(dup_name), "username_taken");
    let host_roles = world.read_all().await.into_iter().find_map(|(_, e)| match e.event {
        Event::UserRegistered(r) if r.user_id == host => Some(r.roles),
        _ => None,
    });
    assert_eq!(host_roles, Some(vec![Role::User, Role::Admin, Role::Finance]), "ADMIN_EMAILS bootstrap");
    let roles = ChangeRoles { user_id: viewer, grant: vec![Role::Ops], revoke: vec![] };
    assert_eq!(c.change_roles(&ctx(admin(), "roles"), roles).await.expect("granted").events.len(), 1);

    // Coins, a stream, a gift, the host's credit.
    c.ledger(
        &ctx(viewer, "buy"),
        viewer,
        LedgerCommand::PurchaseCoins { payment_id: "pi_1".into(), coins: 5000, source_position: 0 },
    )
    .await
    .expect("purchased");
    let stream_id = world.start_stream(host).await;
    let again = ctx(host, "again");
    let second = world.commands.start_stream(
        &again,
        domain::stream::StartStream {
            stream_id: Uuid::now_v7(),
            host_id: host,
            title: "x".into(),
            category: "y".into(),
            at: chrono::Utc::now(),
        },
    );
    assert_eq!(code(second.await), "stream_already_live");
    c.stream(&ctx(viewer, "join"), stream_id, StreamCommand::Join { viewer_id: viewer }).await.expect("joined");
    assert_eq!(
        code(c.send_gift(&ctx(host, "self"), host, stream_id, "rose".into(), 1, 10).await),
        "self_gift_forbidden"
    );
    let gift = c.send_gift(&ctx(viewer, "gift"), viewer, stream_id, "rose".into(), 2, 1500).await.expect("sent");
    let Event::GiftSent(sent) = &gift.events[0].event else { panic!("gift sent") };
    assert_eq!((sent.coins, sent.commit.state_after.wallet_coins), (3000, 2000));
    assert_eq!(
        code(c.send_gift(&ctx(viewer, "too-much"), viewer, stream_id, "rose".into(), 3, 1000).await),
        "insufficient_funds"
    );

    let events = wait_for_credits(&world, Duration::from_secs(10)).await;
    let b = balances(&events);
    assert_eq!(balance(&b, Account::Earnings(host)), 2100);
    assert_eq!(balance(&b, Account::PlatformRevenue), 900);
    assert_eq!(balance(&b, Account::TransitGifts), 0);

    // Payouts: requested, one approved, one rejected.
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(
        code(c.request_payout(&ctx(host, "small"), host, Uuid::now_v7(), 999, "acct".into()).await),
        "below_minimum"
    );
    c.request_payout(&ctx(host, "p1"), host, p1, 1000, "acct".into()).await.expect("requested");
    assert_eq!(
        code(c.request_payout(&ctx(host, "p2-big"), host, p2, 1101, "acct".into()).await),
        "insufficient_earnings"
    );
    c.request_payout(&ctx(host, "p2"), host, p2, 1100, "acct".into()).await.expect("requested");
    c.ledger(&ctx(admin(), "ap"), host, LedgerCommand::ApprovePayout { payout_id: p1, external_ref: "po_1".into() })
        .await
        .expect("approved");
    c.ledger(&ctx(admin(), "rj"), host, LedgerCommand::RejectPayout { payout_id: p2, reason: "kyc".into() })
        .await
        .expect("rejected");
    let refund = LedgerCommand::RefundPurchase { payment_id: "pi_1".into(), coins: 5000, source_position: 0 };
    let refunded = c.ledger(&ctx(viewer, "refund"), viewer, refund).await.expect("refunded");
    let Event::PurchaseRefunded(r) = &refunded.events[0].event else { panic!("refund") };
    assert_eq!(r.commit.state_after.wallet_coins, -3000, "a refund may drive the wallet negative");

    // A negative wallet blocks spending, even on a live stream.
    assert_eq!(
        code(c.send_gift(&ctx(viewer, "late"), viewer, stream_id, "rose".into(), 1, 1).await),
        "insufficient_funds"
    );
    c.stream(&ctx(viewer, "leave"), stream_id, StreamCommand::Leave { viewer_id: viewer }).await.expect("left");
    assert_eq!(
        code(c.stream(&ctx(viewer, "end"), stream_id, StreamCommand::End { by: viewer, by_admin: false }).await),
        "forbidden"
    );
    c.stream(&ctx(host, "end"), stream_id, StreamCommand::End { by: host, by_admin: false }).await.expect("ended");
    world.fund(viewer, 3001).await;
    assert_eq!(
        code(c.send_gift(&ctx(viewer, "late2"), viewer, stream_id, "rose".into(), 1, 1).await),
        "stream_not_live"
    );
    // The host may start again once the first stream ended.
    world.start_stream(host).await;

    let events = world.read_all().await;
    let b = balances(&events);
    assert_eq!(balance(&b, Account::Earnings(host)), 1100);
    assert_eq!(balance(&b, Account::PayoutHold(host)), 0);
    assert_eq!(balance(&b, Account::ExternalPayouts), 1000);
    assert_eq!(balance(&b, Account::Wallet(viewer)), 1);
    // Every aggregate's chain is intact.
    assert_chains(&events);
    reactor.shutdown().await;
}

/// Each subject's events are numbered 1, 2, 3... and chained by hash.
pub fn assert_chains(events: &[(u64, events_schema::Envelope)]) {
    let mut last: std::collections::HashMap<String, (u64, String)> = Default::default();
    for (position, e) in events {
        let (sequence, hash) = last.get(&e.subject()).cloned().unwrap_or((0, events_schema::GENESIS_HASH.to_string()));
        assert_eq!(e.header.sequence, sequence + 1, "sequence at {position}");
        assert_eq!(e.header.prev_hash, hash, "chain at {position}");
        last.insert(e.subject(), (e.header.sequence, e.header.hash.clone()));
    }
}

#[tokio::test]
async fn racing_registrations_for_one_email_admit_exactly_one() {
    let world = World::start().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let c = world.commands.clone();
        tasks.push(tokio::spawn(async move {
            let id = Uuid::now_v7();
            c.register(&ctx(id, "reg"), register(id, "same@example.com", &format!("name{i}"))).await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(code(t.await.expect("task")));
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| c == "ok" || c == "email_taken"), "{codes:?}");
    let registered = world.read_all().await.iter().filter(|(_, e)| matches!(e.event, Event::UserRegistered(_))).count();
    assert_eq!(registered, 1);
}

#[tokio::test]
async fn a_repeated_command_gets_the_first_answer_long_after_the_duplicate_window() {
    // A one-second duplicate window: JetStream forgets the message ids
    // quickly, and the log's own record must do the work.
    let world = World::start_with(|mut c| {
        c.duplicate_window_ms = 1_000;
        c
    })
    .await;
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    world.fund(viewer, 100).await;
    let stream_id = world.start_stream(host).await;
    let key = ctx(viewer, "gift-1");
    let first = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 100).await.expect("sent");
    let position = world.last_position().await;
    // Time is the condition: the server forgets message ids once the
    // (1 s) duplicate window has passed, and nothing can be polled for it.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // The wallet is empty now: deciding again would be refused. The repeat
    // gets the first answer and appends nothing.
    let again = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 100).await.expect("first answer");
    assert!(again.repeated);
    assert_eq!(again.position, first.position);
    assert_eq!(again.events, first.events);
    assert_eq!(world.last_position().await, position, "nothing appended");

    // The same key with other content is refused.
    let mut other = key.clone();
    other.fingerprint = "fp:something-else".into();
    let reused = world.commands.send_gift(&other, viewer, stream_id, "rose".into(), 2, 10).await;
    assert!(matches!(reused, Err(CommandError::IdempotencyKeyReused)), "{reused:?}");

    // The same key from another user is another command.
    let other_user = ctx(host, "gift-1");
    world.fund(host, 5).await;
    let answer = world.commands.send_gift(&other_user, host, stream_id, "rose".into(), 1, 5).await;
    assert_eq!(code(answer), "self_gift_forbidden");
    assert_eq!(world.read_all().await.iter().filter(|(_, e)| matches!(e.event, Event::GiftSent(_))).count(), 1);
}

/// The gift reactor writes the record of a gift whose own record is late.
/// Should it write it between the command's event and the command's own
/// record, the command is still answered as a first run (not replayed),
/// and its repeat as a repeat of the same answer.
#[tokio::test]
async fn a_record_the_reactor_wrote_first_still_answers_a_first_run() {
    let world = World::start().await;
    let spy = std::sync::Arc::new(SpyLog::new(world.log.clone(), Spy::default()));
    let c = commands::handler::Commands::new(spy.clone(), config());
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    world.fund(viewer, 100).await;
    let stream_id = world.start_stream(host).await;
    let key = ctx(viewer, "gift-1");

    spy.watch().record_next_commit_first();
    let first = c.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("sent");
    assert!(!first.repeated, "a first run is not a replay");
    let again = c.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("first answer");
    assert!(again.repeated);
    assert_eq!((again.position, again.events), (first.position, first.events));

    let all = world.read_all().await;
    assert_eq!(all.iter().filter(|(_, e)| matches!(e.event, Event::GiftSent(_))).count(), 1);
    assert_eq!(
        all.iter().filter(|(_, e)| matches!(e.event, Event::CommandRecorded(_))).count(),
        3,
        "fund, stream, gift"
    );
    assert_eq!(balance(&balances(&all), Account::Wallet(viewer)), 70);
}

/// Appends the event of a gift command as a run that died before writing
/// its record would have left it.
pub(crate) async fn orphan_gift(world: &World, viewer: Uuid, stream_id: Uuid, key: &str, unit_coins: i64) -> u64 {
    use commands::log::{AppendRequest, EventLog};
    use domain::{Loaded, gift, ledger, stream};
    let c = ctx(viewer, key);
    let ledger_subject = commands::handler::ledger_subject(viewer);
    let last = world.log.last_on_subject(&ledger_subject).await.expect("read").expect("funded");
    let envelope = events_schema::Envelope::decode(&last.payload).expect("decodes");
    let state = ledger::evolve(ledger::initial_state(viewer), &envelope.event);
    let loaded = Loaded { state, sequence: envelope.header.sequence, last_hash: envelope.header.hash.clone() };
    let stream_last = world.log.last_on_subject(&commands::handler::stream_subject(stream_id)).await.expect("read");
    let stream_state = stream_last
        .map(|m| stream::evolve(None, &events_schema::Envelope::decode(&m.payload).expect("decodes").event))
        .unwrap_or(None);
    let command = gift::SendGift { stream_id, gift_id: "rose".into(), quantity: 1, unit_coins, host_share_bps: 7000 };
    let events =
        gift::decide(gift::GiftState { viewer: &loaded.state, stream: &stream_state }, &command).expect("accepted");
    let meta = crate::world::meta_of(&c);
    let sealed = loaded.seal_for_command(&meta, Some(&c.fingerprint), events.into_iter().next().expect("one"));
    let request = AppendRequest {
        subject: ledger_subject,
        payload: bytes::Bytes::from(sealed.encode()),
        msg_id: Some(sealed.header.event_id.to_string()),
        expected_last_subject_seq: last.position,
    };
    world.log.append(request).await.expect("appended").position
}

#[tokio::test]
async fn a_command_that_died_before_its_record_is_completed_never_applied_twice() {
    let world = World::start_with(|mut c| {
        c.duplicate_window_ms = 1_000;
        c
    })
    .await;
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    world.fund(viewer, 150).await;
    let stream_id = world.start_stream(host).await;

    // Repeated at once, when deciding again would be refused: the event is
    // the ledger's last, so it is the answer, and its record is written.
    let first = orphan_gift(&world, viewer, stream_id, "died-1", 100).await;
    let again = world.commands.send_gift(&ctx(viewer, "died-1"), viewer, stream_id, "rose".into(), 1, 100).await;
    let again = again.expect("the first run's answer");
    assert!(again.repeated);
    assert_eq!(again.events.len(), 1);
    assert_eq!(crate::world::unrecorded(&world.read_all().await), 0, "the record was written");

    // Long after the duplicate window, when deciding again would succeed:
    // the reactor has written the record from the event's header meanwhile.
    world.fund(viewer, 1_000).await;
    let orphan = orphan_gift(&world, viewer, stream_id, "died-2", 10).await;
    assert!(orphan > first);
    let reactor = world.reactor(Default::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while reactor.stats().records_repaired.load(std::sync::atomic::Ordering::Relaxed) == 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reactor.stats().records_repaired.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // Time is the condition: past the (1 s) duplicate window, only the
    // record can make the repeat an answer.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = world.last_position().await;
    let repeat = world.commands.send_gift(&ctx(viewer, "died-2"), viewer, stream_id, "rose".into(), 1, 10).await;
    let repeat = repeat.expect("the first answer");
    assert!(repeat.repeated);
    assert_eq!(repeat.events[0].header.command_id, "died-2");
    assert_eq!(world.last_position().await, before, "nothing appended");
    let gifts = world
        .read_all()
        .await
        .iter()
        .filter(|(_, e)| e.header.command_id == "died-2" && matches!(e.event, Event::GiftSent(_)))
        .count();
    assert_eq!(gifts, 1, "the command applied once");
    reactor.shutdown().await;
}

/// Two handlers (two API processes) on one viewer's ledger: each remembers
/// the ledger it last wrote, and each time the other one has moved it on.
/// Every decision is still the log's: a stale acceptance loses its append
/// and is decided again, a stale rejection is decided again from the log.
#[tokio::test]
async fn a_handler_with_a_stale_view_of_a_ledger_decides_on_the_log() {
    let world = World::start().await;
    let other = commands::handler::Commands::new(world.log.clone(), crate::world::config());
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    let stream_id = world.start_stream(host).await;
    let a = &world.commands;
    let wallet_after = |outcome: &commands::handler::Outcome| match &outcome.events[0].event {
        Event::GiftSent(sent) => sent.commit.state_after.wallet_coins,
        Event::LedgerAdjusted(adjusted) => adjusted.commit.state_after.wallet_coins,
        other => panic!("unexpected {other:?}"),
    };

    world.fund(viewer, 100).await;
    let gift = a.send_gift(&ctx(viewer, "g1"), viewer, stream_id, "rose".into(), 1, 60).await.expect("gift");
    assert_eq!(wallet_after(&gift), 40);
    // The other handler adds coins: the first one's view (40) is stale.
    let adjust = LedgerCommand::Adjust { coins: 100, reason: "bonus".into(), admin_id: admin() };
    assert_eq!(wallet_after(&other.ledger(&ctx(admin(), "bonus"), viewer, adjust).await.expect("adjusted")), 140);
    // 100 > 40 would be refused on the stale view; the log says 140.
    let gift = a.send_gift(&ctx(viewer, "g2"), viewer, stream_id, "rose".into(), 1, 100).await.expect("gift");
    assert_eq!(wallet_after(&gift), 40);
    // The other handler's view (140) is stale: its gift of 30 is decided
    // again after losing the append, on 40.
    let gift = other.send_gift(&ctx(viewer, "g3"), viewer, stream_id, "rose".into(), 1, 30).await.expect("gift");
    assert_eq!(wallet_after(&gift), 10);
    // And the first one's (40) too: 20 is more than the 10 left.
    assert_eq!(
        code(a.send_gift(&ctx(viewer, "g4"), viewer, stream_id, "rose".into(), 1, 20).await),
        "insufficient_funds"
    );

    let events = world.read_all().await;
    let b = balances(&events);
    assert_eq!(balance(&b, Account::Wallet(viewer)), 10);
    let gifts = events.iter().filter(|(_, e)| matches!(e.event, Event::GiftSent(_))).count();
    assert_eq!(gifts, 3, "three gifts stored, each once");
    assert_eq!(b.values().sum::<i64>(), 0, "zero sum");
}

#[tokio::test]
async fn of_concurrent_refreshes_of_one_token_exactly_one_rotates_and_the_rest_end_the_family() {
    use commands::handler::SessionRefresh;
    use domain::session::Rotate;
    const RACERS: usize = 8;
    let world = World::start().await;
    let user = crate::world::register_user(&world, "racer").await;
    let family_id = Uuid::now_v7();
    let rotate = Rotate { family_id, user_id: user, generation: 0, sessions_epoch: 0 };
    let racers = (0..RACERS).map(|_| world.commands.refresh_session(rotate));
    let answers = futures_util::future::join_all(racers).await;
    let rotated: Vec<u64> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(SessionRefresh::Rotated { generation, .. }) => Some(*generation),
            _ => None,
        })
        .collect();
    assert_eq!(rotated, vec![1], "{answers:?}");
    for answer in &answers {
        match answer {
            Ok(SessionRefresh::Rotated { .. } | SessionRefresh::Reused { .. }) => {}
            Err(CommandError::Domain(e)) => assert_eq!(e.code(), "refresh_token_reused"),
            Err(other) => panic!("{other}"),
        }
    }
    // In the log: one rotation, then one end for reuse, on the family's subject.
    let family: Vec<String> = world
        .read_all()
        .await
        .into_iter()
        .filter(|(_, e)| e.subject() == commands::handler::session_subject(family_id))
        .map(|(_, e)| e.type_name().to_string())
        .collect();
    assert_eq!(family, vec!["session.rotated", "session.ended"]);
    // Even the winner's generation is refused now.
    let next = Rotate { generation: 1, ..rotate };
    let refused = world.commands.refresh_session(next).await;
    assert!(matches!(refused, Err(CommandError::Domain(domain::DomainError::SessionRevoked))), "{refused:?}");
}

#[tokio::test]
async fn a_revocation_refuses_gifts_and_payouts_of_older_tokens_in_the_same_read() {
    use commands::handler::Caller;
    use domain::user::RevokeSessions;
    let world = World::start().await;
    let viewer = crate::world::register_user(&world, "spender").await;
    let host = crate::world::register_user(&world, "earner").await;
    world.fund(viewer, 100).await;
    let stream_id = world.start_stream(host).await;
    let c = &world.commands;
    let old = Caller { user_id: viewer, sessions_epoch: 0 };
    c.send_gift_by(&ctx(viewer, "before"), old, stream_id, "rose".into(), 1, 1).await.expect("sent");
    let revoke = RevokeSessions { user_id: viewer, revoked_by: admin() };
    c.revoke_sessions(&ctx(admin(), "revoke"), revoke).await.expect("revoked");
    let gift = c.send_gift_by(&ctx(viewer, "after"), old, stream_id, "rose".into(), 1, 1).await;
    assert_eq!(code(gift), "session_revoked");
    let payout = c.request_payout_by(&ctx(viewer, "payout"), old, Uuid::now_v7(), 10, "acct".into()).await;
    assert_eq!(code(payout), "session_revoked");
    let new = Caller { sessions_epoch: 1, ..old };
    c.send_gift_by(&ctx(viewer, "new"), new, stream_id, "rose".into(), 1, 1).await.expect("a new token works");
    let (ledger, _) = c.ledger_state(viewer).await.expect("the ledger");
    assert_eq!(ledger.snapshot.wallet_coins, 98, "only the valid tokens' gifts moved coins");
}
