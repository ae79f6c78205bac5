//! The audit over a log the Stripe webhook's handler wrote in single
//! appends (record, decision, posting, mark), with a crash completed by a
//! later delivery; and a decision posted twice, which it catches.

use std::sync::Arc;

use commands::handler::{CommandConfig, Commands, ledger_subject, payment_subject};
use commands::log::{EventLog, JetStreamLog};
use commands::testing::stripe::{confirm_500_coins as confirm, recorded};
use commands::testing::{NatsServer, SyncMode};
use domain::ledger::PayoutPolicy;
use domain::payment::{self, PaymentCommand};
use domain::user::Register;
use events_schema::{Actor, Envelope, Event, Money};
use replay_tools::Progress;
use uuid::Uuid;

fn commands(log: &JetStreamLog) -> Commands {
    let log: Arc<dyn EventLog> = Arc::new(log.clone());
    let payout_policy = PayoutPolicy {
        rate_per_coin: Money { amount: "0.01".parse().expect("a rate"), currency: "usd".into() },
        min_coins: 1000,
    };
    Commands::new(
        log,
        CommandConfig {
            host_share_bps: 7000,
            payout_policy,
            admin_emails: vec![],
            earnings_hold_hours: 0,
            idempotency_horizon_hours: 24,
        },
    )
}

async fn deliver(c: &Commands, event_id: &str, payment_id: &str, command: PaymentCommand) {
    c.stripe_event(recorded(event_id, "payment_intent.succeeded"), Some((payment_id.to_string(), command)))
        .await
        .expect("handled");
}

/// Appends `event` next on `subject`, alone (a handler that died after it).
async fn append_alone(log: &JetStreamLog, subject: &str, event: Event) -> u64 {
    commands::testing::append_alone(log, subject, event, Actor::stripe("evt_by_hand")).await.expect("appended")
}

async fn pending(log: &JetStreamLog, payment_id: &str) -> Option<payment::Posting> {
    let last = log.last_on_subject(&payment_subject(payment_id)).await.expect("last").expect("a payment");
    let envelope = Envelope::decode(&last.payload).expect("decodes");
    payment::pending(&payment::at(payment::evolve(payment::initial_state(payment_id), &envelope.event), last.position))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_passes_on_stripe_payments_written_in_single_appends() {
    let server = NatsServer::start_with(SyncMode::Interval).await;
    let log = server.event_log().await;
    let c = commands(&log);
    let buyer = Uuid::now_v7();
    let register = Register {
        user_id: buyer,
        email: "ann@example.com".into(),
        username: "ann".into(),
        password_hash: "x".into(),
        admin_emails: vec![],
    };
    let ctx = commands::handler::CommandContext::new(Actor::user(buyer), "reg".into(), "fp".into(), "c".into())
        .expect("a user's context");
    c.register(&ctx, register).await.expect("registered");
    let refund = |event_id: &str, cents| PaymentCommand::RecordRefund {
        stripe_event_id: event_id.into(),
        charge_amount_cents: 499,
        amount_refunded_cents: cents,
    };
    deliver(&c, "evt_1", "pi_1", confirm("evt_1", buyer)).await;
    deliver(&c, "evt_1r", "pi_1", refund("evt_1r", 100)).await;
    deliver(&c, "evt_2r", "pi_2", refund("evt_2r", 499)).await;
    deliver(&c, "evt_2", "pi_2", confirm("evt_2", buyer)).await;
    // A delivery that died after its decision: counted, not a failure.
    let state = payment::initial_state("pi_3");
    let decision = payment::decide(&state, &confirm("evt_3", buyer)).expect("decided").remove(0);
    let source = append_alone(&log, &payment_subject("pi_3"), decision).await;
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(audit.passed, "{:#?}", audit.findings);
    assert_eq!(audit.reconciliation.decisions_unposted, 1);
    // The next delivery posts it.
    deliver(&c, "evt_3", "pi_3", confirm("evt_3", buyer)).await;
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(audit.passed, "{:#?}", audit.findings);
    assert_eq!(audit.reconciliation.decisions_unposted, 0);
    assert_eq!(audit.reconciliation.coins_purchased, 1500);
    assert_eq!(audit.reconciliation.coins_refunded, 101 + 500);
    assert!(audit.reconciliation.balanced);

    // A second posting of the same decision (by hand: the handler never
    // writes one) is caught.
    let posting = payment::Posting {
        payment_id: "pi_3".into(),
        source_position: source,
        effect: payment::LedgerEffect { user_id: buyer, kind: payment::EffectKind::Purchase, coins: 500 },
    };
    assert_eq!(pending(&log, "pi_3").await, None);
    let (ledger, _) = c.ledger_state(buyer).await.expect("ledger");
    let twice = payment::post(&posting, &ledger).expect("a commit").remove(0);
    append_alone(&log, &ledger_subject(buyer), twice).await;
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(!audit.passed);
    assert!(
        audit.findings.iter().any(|f| f.check == "reconciliation" && f.detail.contains("already posted")),
        "{:#?}",
        audit.findings
    );
}

fn dispute(event_id: &str, dispute_id: &str, withdrawn: bool, reinstated: bool) -> PaymentCommand {
    PaymentCommand::RecordDispute {
        stripe_event_id: event_id.into(),
        dispute: payment::DisputeSeen {
            dispute_id: dispute_id.into(),
            amount_cents: 499,
            currency: "usd".into(),
            status: if reinstated { "won".into() } else { "needs_response".into() },
            reason: "fraudulent".into(),
            fee_cents: 1500,
            balance_transactions: u32::from(withdrawn) + u32::from(reinstated),
            funds_withdrawn: withdrawn,
            funds_reinstated: reinstated,
        },
    }
}

/// Disputes lost and won, and a flagged payment credited by finance: the
/// audit counts withdrawals, reinstatements and the resolution's credit,
/// and `external:stripe` is minus the net. A won dispute credited back
/// twice (by hand), or a resolution's credit on a payment already
/// purchased, are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_counts_disputes_and_resolutions_and_catches_a_second_credit() {
    let server = NatsServer::start_with(SyncMode::Interval).await;
    let log = server.event_log().await;
    let c = commands(&log);
    let buyer = Uuid::now_v7();
    let register = Register {
        user_id: buyer,
        email: "bea@example.com".into(),
        username: "bea".into(),
        password_hash: "x".into(),
        admin_emails: vec![],
    };
    let ctx = commands::handler::CommandContext::new(Actor::user(buyer), "reg".into(), "fp".into(), "c".into())
        .expect("a user's context");
    c.register(&ctx, register).await.expect("registered");
    // Lost: 500 withdrawn. Won: 500 withdrawn, 500 reinstated.
    deliver(&c, "evt_l", "pi_lost", confirm("evt_l", buyer)).await;
    deliver(&c, "evt_ld", "pi_lost", dispute("evt_ld", "dp_l", true, false)).await;
    deliver(&c, "evt_w", "pi_won", confirm("evt_w", buyer)).await;
    deliver(&c, "evt_wd", "pi_won", dispute("evt_wd", "dp_w", true, false)).await;
    deliver(&c, "evt_wr", "pi_won", dispute("evt_wr", "dp_w", true, true)).await;
    // An unknown user's payment, credited by finance to the buyer.
    let typo = PaymentCommand::ConfirmPurchase {
        stripe_event_id: "evt_t".into(),
        buyer: payment::Buyer::Unknown("typo".into()),
        package: payment::PackageRef { id: "coins_500".into(), coins: Some(500), price: None },
        amount_cents: 499,
        currency: "usd".into(),
        offered: payment::Offered::NotStated,
    };
    deliver(&c, "evt_t", "pi_typo", typo).await;
    let resolve = PaymentCommand::Resolve {
        resolved_by: Uuid::now_v7(),
        note: "ticket 7".into(),
        action: payment::Resolve::Credit { user_id: buyer, package_id: "coins_500".into(), coins: 500 },
    };
    c.resolve_payment("pi_typo", buyer, resolve).await.expect("resolved").expect("a payment");
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(audit.passed, "{:#?}", audit.findings);
    let r = &audit.reconciliation;
    assert_eq!((r.coins_purchased, r.coins_refunded), (1500, 0));
    assert_eq!((r.coins_dispute_withdrawn, r.coins_dispute_reinstated), (1000, 500));
    assert_eq!(r.external_stripe_coins, -(1500 + 500 - 1000));
    assert!(r.balanced);

    // A credit of the resolved payment posted again as a new purchase (by
    // hand: the handler never writes one) is a second credit.
    let (ledger, _) = c.ledger_state(buyer).await.expect("ledger");
    let again = domain::ledger::decide(
        &ledger,
        &domain::ledger::LedgerCommand::PurchaseCoins { payment_id: "pi_typo".into(), coins: 500, source_position: 0 },
    )
    .expect("a commit")
    .remove(0);
    append_alone(&log, &ledger_subject(buyer), again).await;
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(!audit.passed);
    assert!(
        audit.findings.iter().any(|f| f.detail.contains("payment pi_typo credited a second time")),
        "{:#?}",
        audit.findings
    );
}
