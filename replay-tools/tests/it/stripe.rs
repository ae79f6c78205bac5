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
        CommandConfig { host_share_bps: 7000, payout_policy, admin_emails: vec![], earnings_hold_hours: 0 },
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
