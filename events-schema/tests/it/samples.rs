//! One sample event of every type, sealed as the first or second event of
//! its aggregate.

use chrono::{TimeZone, Utc};
use events_schema::*;
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

pub fn meta(n: u128) -> EventMeta {
    EventMeta {
        event_id: id(1000 + n),
        occurred_at: Utc.timestamp_opt(1_750_000_000 + n as i64, 0).single().expect("a time"),
        command_id: format!("idem-{n}"),
        correlation_id: format!("req-{n}"),
        actor: Actor::user(id(1)),
    }
}

fn commit(transfers: Vec<Transfer>, wallet: i64, earnings: i64, held: i64) -> LedgerCommit {
    LedgerCommit {
        transfers,
        state_after: LedgerSnapshot {
            wallet_coins: wallet,
            earnings_coins: earnings,
            held_coins: held,
            pending_payouts: if held > 0 { vec![PendingPayout { payout_id: id(50), coins: held }] } else { vec![] },
            last_credited_position: 0,
            maturing: vec![],
        },
    }
}

fn t(from: Account, to: Account, amount_coins: i64) -> Transfer {
    Transfer { from, to, amount_coins }
}

/// A sample of every event type, in `EVENT_TYPES` order.
pub fn events() -> Vec<Event> {
    let (u, h, s) = (id(1), id(2), id(3));
    let snapshot = StreamSnapshot { host_id: h, status: StreamStatus::Live, started_at: meta(0).occurred_at };
    vec![
        Event::UserRegistered(UserRegistered {
            user_id: u,
            email: "ann@example.com".into(),
            username: "ann".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec![Role::User],
        }),
        Event::UserRolesChanged(UserRolesChanged {
            user_id: u,
            granted: vec![Role::Finance],
            revoked: vec![],
            state_after: UserSnapshot {
                email: "ann@example.com".into(),
                username: "ann".into(),
                roles: vec![Role::User, Role::Finance],
                sessions_epoch: 0,
            },
        }),
        Event::ReservationClaimed(ReservationClaimed {
            kind: ReservationKind::Email,
            value: "ann@example.com".into(),
            user_id: u,
        }),
        Event::CoinsPurchased(CoinsPurchased {
            user_id: u,
            payment_id: "pi_3Q".into(),
            coins: 500,
            source_position: 41,
            commit: commit(vec![t(Account::ExternalStripe, Account::Wallet(u), 500)], 500, 0, 0),
        }),
        Event::PurchaseRefunded(PurchaseRefunded {
            user_id: u,
            payment_id: "pi_3Q".into(),
            coins: 100,
            source_position: 44,
            commit: commit(vec![t(Account::Wallet(u), Account::ExternalStripe, 100)], 400, 0, 0),
        }),
        Event::GiftSent(GiftSent {
            user_id: u,
            stream_id: s,
            host_id: h,
            gift_id: "rose".into(),
            quantity: 2,
            unit_coins: 10,
            coins: 20,
            host_share_bps: 7000,
            commit: commit(vec![t(Account::Wallet(u), Account::TransitGifts, 20)], 380, 0, 0),
        }),
        Event::GiftsReceived(GiftsReceived {
            user_id: h,
            gifts: vec![ReceivedGift { source_position: 6, viewer_id: u, stream_id: s, coins: 20, host_coins: 14 }],
            commit: LedgerCommit {
                transfers: vec![
                    t(Account::TransitGifts, Account::Earnings(h), 14),
                    t(Account::TransitGifts, Account::PlatformRevenue, 6),
                ],
                state_after: LedgerSnapshot {
                    earnings_coins: 14,
                    last_credited_position: 6,
                    ..LedgerSnapshot::default()
                },
            },
        }),
        Event::PayoutRequested(PayoutRequested {
            user_id: h,
            payout_id: id(50),
            coins: 1000,
            fiat: Money { amount: Decimal::new(1000, 2), currency: "usd".into() },
            destination: "acct_1".into(),
            commit: commit(vec![t(Account::Earnings(h), Account::PayoutHold(h), 1000)], 0, 500, 1000),
        }),
        Event::PayoutApproved(PayoutApproved {
            user_id: h,
            payout_id: id(50),
            coins: 1000,
            external_ref: "po_1".into(),
            commit: commit(vec![t(Account::PayoutHold(h), Account::ExternalPayouts, 1000)], 0, 500, 0),
        }),
        Event::PayoutRejected(PayoutRejected {
            user_id: h,
            payout_id: id(50),
            coins: 1000,
            reason: "kyc".into(),
            commit: commit(vec![t(Account::PayoutHold(h), Account::Earnings(h), 1000)], 0, 1500, 0),
        }),
        Event::LedgerAdjusted(LedgerAdjusted {
            user_id: u,
            coins: -5,
            reason: "duplicate".into(),
            admin_id: id(9),
            commit: commit(vec![t(Account::Wallet(u), Account::PlatformAdjustments, 5)], 375, 0, 0),
        }),
        Event::StreamStarted(StreamStarted {
            stream_id: s,
            host_id: h,
            title: "Friday".into(),
            category: "music".into(),
            state_after: snapshot.clone(),
        }),
        Event::ViewerJoined(ViewerJoined { stream_id: s, viewer_id: u, state_after: snapshot.clone() }),
        Event::ViewerLeft(ViewerLeft { stream_id: s, viewer_id: u, state_after: snapshot.clone() }),
        Event::StreamEnded(StreamEnded {
            stream_id: s,
            host_id: h,
            ended_by: h,
            state_after: StreamSnapshot { status: StreamStatus::Ended, ..snapshot },
        }),
        Event::ChannelWentLive(ChannelWentLive { host_id: h, stream_id: s }),
        Event::ChannelWentOffline(ChannelWentOffline { host_id: h, stream_id: s }),
        Event::StripeEventRecorded(StripeEventRecorded {
            stripe_event_id: "evt_1".into(),
            stripe_event_type: "payment_intent.succeeded".into(),
            stripe_created: 1_750_000_000,
            body: r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#.into(),
        }),
        Event::CommandRecorded(CommandRecorded {
            scope: format!("user:{u}"),
            command_id: "idem-42".into(),
            fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            event_count: 1,
            event_positions: vec![],
        }),
        Event::PaymentPurchaseCredited(PaymentPurchaseCredited {
            payment_id: "pi_3Q".into(),
            stripe_event_id: "evt_2".into(),
            purchase: purchase(u),
            state_after: PaymentSnapshot { purchase: Some(purchase(u)), ..PaymentSnapshot::default() },
        }),
        Event::PaymentRefundRecorded(PaymentRefundRecorded {
            payment_id: "pi_3Q".into(),
            stripe_event_id: Some("evt_3".into()),
            charge_amount_cents: 499,
            amount_refunded_cents: 100,
            coins: 101,
            state_after: PaymentSnapshot {
                purchase: Some(purchase(u)),
                charge_amount_cents: 499,
                amount_refunded_cents: 100,
                coins_reversed: 101,
                flags: vec![],
                posted_position: Some(41),
                ..PaymentSnapshot::default()
            },
        }),
        Event::PaymentFlagged(PaymentFlagged {
            payment_id: "pi_3R".into(),
            stripe_event_id: "evt_4".into(),
            flag: PaymentFlag::UnknownPackage,
            detail: "coins_9999".into(),
            state_after: PaymentSnapshot { flags: vec![PaymentFlag::UnknownPackage], ..PaymentSnapshot::default() },
        }),
        Event::PaymentPosted(PaymentPosted {
            payment_id: "pi_3Q".into(),
            posted_position: 41,
            ledger_position: 42,
            state_after: PaymentSnapshot {
                purchase: Some(purchase(u)),
                posted_position: Some(41),
                ..PaymentSnapshot::default()
            },
        }),
        Event::PaymentDisputeRecorded(PaymentDisputeRecorded {
            payment_id: "pi_3Q".into(),
            stripe_event_id: Some("evt_5".into()),
            dispute: dispute(),
            coins: 500,
            state_after: PaymentSnapshot {
                purchase: Some(purchase(u)),
                flags: vec![PaymentFlag::Disputed],
                disputes: vec![dispute()],
                coins_dispute_withdrawn: 500,
                posted_position: Some(43),
                ..PaymentSnapshot::default()
            },
        }),
        Event::PaymentResolved(PaymentResolved {
            payment_id: "pi_3R".into(),
            resolution: PaymentResolution {
                action: ResolutionAction::Credit,
                resolved_by: id(9),
                note: "buyer confirmed by support ticket 881".into(),
                user_id: Some(u),
                package_id: Some("coins_500".into()),
                coins: 500,
            },
            purchase: Some(purchase(u)),
            state_after: PaymentSnapshot {
                purchase: Some(purchase(u)),
                flags: vec![PaymentFlag::UnknownUser],
                posted_position: Some(0),
                ..PaymentSnapshot::default()
            },
        }),
        Event::UserSessionsRevoked(UserSessionsRevoked {
            user_id: u,
            revoked_by: id(9),
            state_after: UserSnapshot {
                email: "ann@example.com".into(),
                username: "ann".into(),
                roles: vec![Role::User],
                sessions_epoch: 1,
            },
        }),
        Event::SessionRotated(SessionRotated { family_id: id(60), user_id: u, generation: 1 }),
        Event::SessionEnded(SessionEnded {
            family_id: id(60),
            user_id: u,
            generation: 1,
            reason: SessionEndReason::Reuse,
        }),
        Event::AdjustmentProposed(AdjustmentProposed {
            adjustment_id: id(70),
            user_id: u,
            coins: -25_000,
            reason: "duplicate credit".into(),
            proposed_by: id(9),
        }),
        Event::AdjustmentApproved(AdjustmentApproved {
            adjustment_id: id(70),
            user_id: u,
            coins: -25_000,
            proposed_by: id(9),
            approved_by: id(8),
        }),
        Event::AdjustmentRejected(AdjustmentRejected {
            adjustment_id: id(71),
            user_id: u,
            coins: 50_000,
            proposed_by: id(9),
            rejected_by: id(8),
            reason: "no ticket".into(),
        }),
    ]
}

fn purchase(user_id: Uuid) -> PaymentPurchase {
    PaymentPurchase { user_id, package_id: "coins_500".into(), coins: 500, amount_cents: 499, currency: "usd".into() }
}

/// Every sample, sealed as the first event of its aggregate.
pub fn envelopes() -> Vec<Envelope> {
    events().into_iter().enumerate().map(|(i, e)| Envelope::seal(&meta(i as u128), e, 1, GENESIS_HASH)).collect()
}

fn dispute() -> PaymentDispute {
    PaymentDispute {
        dispute_id: "dp_1".into(),
        amount_cents: 499,
        currency: "usd".into(),
        status: "needs_response".into(),
        reason: "fraudulent".into(),
        fee_cents: 1500,
        balance_transactions: 1,
        funds_withdrawn: true,
        funds_reinstated: false,
        coins_reversed: 500,
    }
}
