//! The guarded writes, command by command.

use super::super::documents::{read_stripe_payment, read_transaction};
use super::*;
use crate::change::{PositionedChange, Posting};
use crate::model::{Projection, ProjectionVersion, StripeSide, TransactionDoc, TxMetadata, TxStatus, WalletDoc};
use chrono::{DateTime, Utc};

fn u(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_123).unwrap()
}

fn batch(targets: Vec<ProjectionVersion>, changes: Vec<(u64, u8, Change)>) -> ProjectedBatch {
    let to_position = changes.iter().map(|c| c.0).max().unwrap_or(0);
    ProjectedBatch {
        targets,
        to_position,
        changes: changes
            .into_iter()
            .map(|(position, target, change)| PositionedChange { position, target, change })
            .collect(),
        hold_open: false,
        behind_events: 0,
    }
}

#[test]
fn every_dependent_update_is_guarded_by_the_event_position() {
    let targets =
        vec![Projection::Wallets.current(), Projection::Streams.current(), Projection::GiftLeaderboards.current()];
    let wallet = WalletDoc { user_id: u(1), coins: 10, earnings: 0, held: 0, updated_at: at(), position: 7 };
    let b = batch(
        targets,
        vec![
            (7, 0, Change::Wallet(wallet)),
            (8, 1, Change::StreamGifts { stream_id: u(5), coins: 30 }),
            (8, 2, Change::LeaderboardGift { stream_id: u(5), user_id: u(1), coins: 30 }),
        ],
    );
    let plan = plan_batch(&b, &[0, 0, 0], &mut PlanInputs::default()).unwrap();
    assert_eq!((plan.applied, plan.skipped), (3, 0));
    assert_eq!(plan.writes[0].collection, "wallets");
    assert_eq!(
        plan.writes[0].statement,
        doc! {"q": {"_id": u(1).to_string(), "position": {"$lt": 7i64}},
        "u": {"$set": {"coins": 10i64, "earnings": 0i64, "held": 0i64, "updatedAt": time(at()), "position": 7i64}},
        "upsert": true}
    );
    assert_eq!(
        plan.writes[1].statement,
        doc! {"q": {"_id": u(5).to_string(), "position": {"$lt": 8i64}},
        "u": {"$inc": {"giftsCoins": 30i64}, "$set": {"position": 8i64}}, "upsert": false}
    );
    assert_eq!(
        plan.writes[2].statement.get_document("q").unwrap(),
        &doc! {"_id": format!("{}|{}", u(5), u(1)), "position": {"$lt": 8i64}}
    );
    // Past the checkpoint only.
    let plan = plan_batch(&b, &[7, 8, 0], &mut PlanInputs::default()).unwrap();
    assert_eq!((plan.applied, plan.skipped, plan.writes.len()), (1, 2, 1));
}

#[test]
fn viewers_count_once_on_live_streams_and_their_writes_come_last() {
    let target = Projection::Streams.current();
    let (stream, viewer) = (u(5), u(2));
    let join = || Change::ViewerJoined { stream_id: stream, viewer_id: viewer };
    let b = batch(
        vec![target],
        vec![
            (9, 0, join()),
            (10, 0, join()),
            (11, 0, Change::ViewerLeft { stream_id: stream, viewer_id: viewer }),
            (12, 0, Change::ViewerLeft { stream_id: stream, viewer_id: viewer }),
        ],
    );
    let mut inputs = PlanInputs { live: HashMap::from([((0u8, stream), true)]), ..PlanInputs::default() };
    let plan = plan_batch(&b, &[0], &mut inputs).unwrap();
    let collections: Vec<&str> = plan.writes.iter().map(|w| w.collection.as_str()).collect();
    assert_eq!(collections, ["streams", "streams", "stream_viewers", "stream_viewers"], "a second join counts nothing");
    let up = &plan.writes[0].statement;
    assert_eq!(
        up.get_document("q").unwrap(),
        &doc! {"_id": stream.to_string(), "position": {"$lt": 9i64}, "isLive": true}
    );
    assert_eq!(up.get_array("u").unwrap().len(), 2, "count up, then the peak");
    let joined = &plan.writes[2].statement;
    assert_eq!(
        joined.get_document("q").unwrap(),
        &doc! {"_id": format!("{stream}|{viewer}"), "position": {"$lt": 9i64}}
    );
    assert_eq!(
        joined.get_document("u").unwrap().get_document("$set").unwrap(),
        &doc! {"present": true, "position": 9i64}
    );
    assert!(!inputs.viewers[&(0, stream, viewer)], "left");

    // Not live (or unknown): a join counts nothing.
    let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
}

#[test]
fn only_a_duplicate_on_id_is_already_applied() {
    assert_eq!(resume_after(&doc! {"ok": 1, "n": 3}).unwrap(), None);
    let on_id = doc! {"ok": 1, "n": 1, "writeErrors": [{"index": 1, "code": 11000, "errmsg": "E11000",
    "keyPattern": {"_id": 1}, "keyValue": {"_id": "a"}}]};
    assert_eq!(resume_after(&on_id).unwrap(), Some(1));
    let on_email = doc! {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000",
    "keyPattern": {"email": 1}, "keyValue": {"email": "a@b.c"}}]};
    assert!(matches!(resume_after(&on_email), Err(ProjectionError::StoreRefused(_))), "another user holds it");
    let old_server = doc! {"ok": 1, "writeErrors": [{"index": 2, "code": 11000,
    "errmsg": "E11000 duplicate key error collection: db.users index: _id_ dup key: { _id: \"a\" }"}]};
    assert_eq!(resume_after(&old_server).unwrap(), Some(2));
    let other = doc! {"ok": 1, "writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}]};
    assert!(resume_after(&other).is_err());
    let concern = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 100, "errmsg": "no"}};
    assert!(matches!(resume_after(&concern), Err(ProjectionError::StoreRefused(_))));
    let timeout = doc! {"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "waiting"}};
    assert!(matches!(resume_after(&timeout), Err(ProjectionError::Store(_))), "a timeout may pass");
    let command = doc! {"update": "wallets", "updates": [{"q": 1}, {"q": 2}, {"q": 3}], "ordered": true};
    assert_eq!(command_from(&command, 2).unwrap(), doc! {"update": "wallets", "updates": [{"q": 3}], "ordered": true});
    assert!(command_from(&command, 3).is_none());
}

#[test]
fn writes_group_by_collection_into_commands_capped_by_statements_and_bytes() {
    let w = |c: &str, n: i32| Write { collection: c.into(), statement: doc! {"q": n} };
    let commands = update_commands(&[w("a", 1), w("b", 2), w("a", 3), w("b", 4)]).unwrap();
    assert_eq!(
        commands,
        vec![
            doc! {"update": "a", "updates": [{"q": 1}, {"q": 3}], "ordered": true},
            doc! {"update": "b", "updates": [{"q": 2}, {"q": 4}], "ordered": true},
        ],
        "one command per collection, its writes in order"
    );
    let many: Vec<Write> = (0..(COMMAND_STATEMENTS_MAX as i32 + 1)).map(|n| w("a", n)).collect();
    assert_eq!(update_commands(&many).unwrap().len(), 2);
    let big = |n: i32| Write { collection: "a".into(), statement: doc! {"q": n, "u": "x".repeat(3 * 1024 * 1024)} };
    let commands = update_commands(&[big(1), big(2), big(3)]).unwrap();
    assert_eq!(commands.len(), 2, "8 MiB a command at most");
    let huge = Write { collection: "a".into(), statement: doc! {"u": "x".repeat(COMMAND_BYTES_MAX)} };
    assert!(matches!(update_commands(&[huge]), Err(ProjectionError::StoreRefused(_))));
}

#[test]
fn inserts_are_insert_if_absent_and_platform_balances_run_from_the_checkpoint() {
    let target = Projection::Ledger.current();
    let posting = |account, seq, coins, balance_after| {
        Change::Posting(Posting {
            account,
            seq,
            event_type: "ledger.gift_sent",
            counterparty: Account::PlatformRevenue,
            coins,
            balance_after,
            created_at: at(),
        })
    };
    let b = batch(
        vec![target],
        vec![
            (10, 0, posting(Account::Wallet(u(1)), 0, -5, Some(95))),
            (10, 0, posting(Account::TransitGifts, 1, 5, None)),
            (11, 0, posting(Account::TransitGifts, 1, 7, None)),
        ],
    );
    let mut inputs =
        PlanInputs { balances: HashMap::from([((0u8, Account::TransitGifts), 100i64)]), ..PlanInputs::default() };
    let plan = plan_batch(&b, &[9], &mut inputs).unwrap();
    let entries: Vec<&Write> = plan.writes.iter().filter(|w| w.collection == "ledger_entries").collect();
    assert_eq!(entries.len(), 3);
    let third = entries[2].statement.clone();
    assert_eq!(third.get_document("q").unwrap(), &doc! {"_id": format!("transit:gifts@{:020}.0001", 11)});
    let set = third.get_document("u").unwrap().get_document("$setOnInsert").unwrap();
    assert_eq!(set.get_i64("balanceAfter").unwrap(), 112);
    assert!(third.get_bool("upsert").unwrap());
    let accounts: Vec<&Write> = plan.writes.iter().filter(|w| w.collection == "ledger_accounts").collect();
    assert_eq!(
        accounts.iter().map(|w| w.statement.clone()).collect::<Vec<_>>(),
        vec![
            doc! {"q": {"_id": format!("wallet:{}", u(1)), "position": {"$lt": 10i64}},
            "u": {"$set": {"balance": 95i64, "position": 10i64}}, "upsert": true},
            doc! {"q": {"_id": "transit:gifts", "position": {"$lt": 11i64}},
            "u": {"$set": {"balance": 112i64, "position": 11i64}}, "upsert": true},
        ]
    );
    assert_eq!(inputs.balances[&(0, Account::TransitGifts)], 112);
}

#[test]
fn a_purchase_takes_its_checkout_session_whichever_came_first() {
    let target = Projection::Transactions.current();
    let tx = |payment: &str| TransactionDoc {
        id: u(3),
        user_id: u(1),
        kind: TxType::Purchase,
        status: TxStatus::Completed,
        coins: 5,
        wallet_after: 5,
        earnings_after: 0,
        held_after: 0,
        metadata: TxMetadata { payment_id: Some(payment.into()), ..TxMetadata::default() },
        created_at: at(),
        position: 4,
    };
    let b = batch(
        vec![target],
        vec![
            (3, 0, Change::TransactionStripeSession { payment_id: "pi_1".into(), session_id: "cs_1".into() }),
            (4, 0, Change::Transaction(tx("pi_1"))),
        ],
    );
    let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
    assert_eq!(
        plan.writes[1].statement,
        doc! {"q": {"metadata.paymentId": "pi_1"},
        "u": {"$set": {"metadata.stripeSessionId": "cs_1"}}, "upsert": false, "multi": true}
    );
    let inserted = plan.writes[2].statement.get_document("u").unwrap().get_document("$setOnInsert").unwrap();
    assert_eq!(inserted.get_document("metadata").unwrap().get_str("stripeSessionId").unwrap(), "cs_1");
    assert_eq!(
        read_transaction(&{
            let mut d = inserted.clone();
            d.insert("_id", u(3).to_string());
            d
        })
        .unwrap()
        .metadata
        .stripe_session_id
        .as_deref(),
        Some("cs_1")
    );
}

#[test]
fn a_payments_stripe_side_is_set_whole_and_reads_back() {
    let target = Projection::StripePayments.current();
    let side = StripeSide {
        package_id: Some("coins_500".into()),
        coins_expected: 500,
        amount_cents: 499,
        currency: Some("usd".into()),
        charge_amount_cents: 499,
        amount_refunded_cents: 100,
        flags: vec!["unknown_package".into(), "disputed".into()],
        disputes: vec![crate::model::DisputeDoc {
            dispute_id: "dp_1".into(),
            amount_cents: 499,
            currency: "usd".into(),
            status: "lost".into(),
            reason: "fraudulent".into(),
            fee_cents: 1500,
            funds_withdrawn: true,
            funds_reinstated: false,
            coins_reversed: 400,
        }],
        coins_refund_reversed: 100,
        coins_dispute_withdrawn: 400,
        coins_dispute_reinstated: 0,
        claimed_user_id: Some("not-a-user".into()),
        claimed_package_id: Some("coins_500".into()),
        resolution: Some(crate::model::ResolutionDoc {
            action: "dismiss".into(),
            resolved_by: u(9),
            note: "refunded in Stripe's dashboard".into(),
            user_id: None,
            package_id: None,
            coins: 0,
        }),
    };
    let b = batch(
        vec![target],
        vec![
            (7, 0, Change::StripeState { payment_id: "pi_1".into(), user_id: Some(u(1)), state: side.clone() }),
            (8, 0, Change::StripeState { payment_id: "pi_2".into(), user_id: None, state: StripeSide::default() }),
        ],
    );
    let plan = plan_batch(&b, &[0], &mut PlanInputs::default()).unwrap();
    let first = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_1"));
    let update = first.expect("an update of pi_1").statement.get_document("u").unwrap().clone();
    let set = update.get_document("$set").unwrap();
    assert_eq!(set.get_str("userId").unwrap(), u(1).to_string());
    assert_eq!(set.get_i64("coinsExpected").unwrap(), 500);
    assert_eq!(
        set.get_array("flags").unwrap(),
        &vec![Bson::String("unknown_package".into()), Bson::String("disputed".into())]
    );
    assert_eq!(set.get_i64("coinsDisputeWithdrawn").unwrap(), 400);
    assert_eq!(set.get_array("disputes").unwrap().len(), 1);
    assert!(update.get_document("$setOnInsert").unwrap().get("userId").is_none(), "the user is set, not defaulted");
    let second = plan.writes.iter().find(|w| w.statement.get_document("q").unwrap().get_str("_id") == Ok("pi_2"));
    let update = second.expect("an update of pi_2").statement.get_document("u").unwrap().clone();
    assert_eq!(update.get_document("$setOnInsert").unwrap().get("userId"), None, "no explicit null");
    assert!(update.get_document("$set").unwrap().get("userId").is_none());

    // What an upsert stores reads back as the document.
    let mut stored = set.clone();
    stored.extend(update_defaults());
    stored.insert("_id", "pi_1");
    let doc = read_stripe_payment(&stored).unwrap();
    assert_eq!(doc.stripe, side);
    assert_eq!((doc.payment_id.as_str(), doc.user_id, doc.position), ("pi_1", Some(u(1)), 7));
}

fn update_defaults() -> Document {
    doc! {"coinsIssued": 500i64, "coinsReversed": 101i64}
}
