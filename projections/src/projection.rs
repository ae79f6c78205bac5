//! The pure projections: an event in, document changes out. No IO, no clock:
//! times come from the envelope, positions from the log.
//!
//! An event type a projection does not use yields nothing (its checkpoint
//! still moves past it: that is the runner's business).

use chrono::{DateTime, Utc};
use events_schema::{
    Account, Envelope, Event, LedgerCommit, PaymentFlag, PaymentSnapshot, ResolutionAction, StreamStatus,
    StripeEventRecorded, Transfer,
};
use uuid::Uuid;

use crate::change::{Change, Posting};
use crate::model::{
    AdjustmentDoc, AdjustmentStatus, DayTotals, DisputeDoc, PayoutDoc, PayoutStatus, Projection, ResolutionDoc,
    StreamDoc, StripeSide, TransactionDoc, TxMetadata, TxStatus, TxType, UserDoc, WalletDoc,
};

/// Appends to `out` the changes `projection` makes of `envelope`, stored at
/// log `position`. Each document is changed at most once per event, which
/// is what lets MongoDB guard every update by the event's position.
pub fn project(projection: Projection, envelope: &Envelope, position: u64, out: &mut Vec<Change>) {
    let at = millis(envelope.header.occurred_at);
    match projection {
        Projection::Users => users(&envelope.event, at, position, out),
        Projection::Wallets => wallets(&envelope.event, at, position, out),
        Projection::Transactions => transactions(envelope, position, out),
        Projection::Streams => streams(&envelope.event, at, position, out),
        Projection::Payouts => payouts(&envelope.event, at, position, out),
        Projection::Ledger => ledger(&envelope.event, at, out),
        Projection::GiftLeaderboards => leaderboards(&envelope.event, out),
        Projection::StripePayments => stripe_payments(&envelope.event, out),
        Projection::LedgerDaily => ledger_daily(&envelope.event, at, out),
    }
}

fn users(event: &Event, at: DateTime<Utc>, position: u64, out: &mut Vec<Change>) {
    match event {
        Event::UserRegistered(e) => out.push(Change::UserRegistered(UserDoc {
            id: e.user_id,
            email: e.email.clone(),
            username: e.username.clone(),
            roles: e.roles.clone(),
            password_hash: e.password_hash.clone(),
            created_at: at,
            position,
        })),
        Event::UserRolesChanged(e) => out.push(Change::UserUpdated {
            user_id: e.user_id,
            email: e.state_after.email.clone(),
            username: e.state_after.username.clone(),
            roles: e.state_after.roles.clone(),
        }),
        _ => {}
    }
}

/// Read models keep times to the millisecond, as MongoDB does, so that
/// every adapter holds the same documents.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The user a ledger event belongs to: one commit, one user.
fn ledger_user(event: &Event) -> Option<Uuid> {
    Some(match event {
        Event::CoinsPurchased(e) => e.user_id,
        Event::PurchaseRefunded(e) => e.user_id,
        Event::GiftSent(e) => e.user_id,
        Event::GiftsReceived(e) => e.user_id,
        Event::PayoutRequested(e) => e.user_id,
        Event::PayoutApproved(e) => e.user_id,
        Event::PayoutRejected(e) => e.user_id,
        Event::LedgerAdjusted(e) => e.user_id,
        _ => return None,
    })
}

fn wallets(event: &Event, at: DateTime<Utc>, position: u64, out: &mut Vec<Change>) {
    let (Some(user_id), Some(commit)) = (ledger_user(event), event.ledger_commit()) else { return };
    let s = &commit.state_after;
    out.push(Change::Wallet(WalletDoc {
        user_id,
        coins: s.wallet_coins,
        earnings: s.earnings_coins,
        held: s.held_coins,
        updated_at: at,
        position,
    }));
}

/// The signed change of the user's own accounts in a commit. Saturating: a
/// commit's amounts are checked i64 sums already, so this never saturates
/// on a valid log, and a read model must not panic on a bad one.
fn user_net_coins(user: Uuid, commit: &LedgerCommit) -> i64 {
    commit.transfers.iter().fold(0i64, |net, t| {
        let mut net = net;
        if t.from.owner() == Some(user) {
            net = net.saturating_sub(t.amount_coins);
        }
        if t.to.owner() == Some(user) {
            net = net.saturating_add(t.amount_coins);
        }
        net
    })
}

fn transactions(envelope: &Envelope, position: u64, out: &mut Vec<Change>) {
    let event = &envelope.event;
    if let Event::StripeEventRecorded(e) = event {
        if let Some((payment_id, session_id)) = checkout_session(e) {
            out.push(Change::TransactionStripeSession { payment_id, session_id });
        }
        return;
    }
    let (Some(user_id), Some(commit)) = (ledger_user(event), event.ledger_commit()) else { return };
    let mut metadata = TxMetadata::default();
    let mut status = TxStatus::Completed;
    let kind = match event {
        Event::CoinsPurchased(e) => {
            metadata.payment_id = Some(e.payment_id.clone());
            TxType::Purchase
        }
        Event::PurchaseRefunded(e) => {
            metadata.payment_id = Some(e.payment_id.clone());
            TxType::Refund
        }
        Event::GiftSent(e) => {
            metadata.stream_id = Some(e.stream_id);
            metadata.host_id = Some(e.host_id);
            metadata.gift_id = Some(e.gift_id.clone());
            metadata.quantity = Some(e.quantity);
            TxType::GiftSent
        }
        Event::GiftsReceived(e) => {
            let first_stream = e.gifts.first().map(|g| g.stream_id);
            if e.gifts.iter().all(|g| Some(g.stream_id) == first_stream) {
                metadata.stream_id = first_stream;
            }
            metadata.gifts_count = i64::try_from(e.gifts.len()).ok();
            TxType::GiftReceived
        }
        Event::PayoutRequested(e) => {
            metadata.payout_id = Some(e.payout_id);
            status = TxStatus::Pending;
            TxType::PayoutRequested
        }
        Event::PayoutApproved(e) => {
            metadata.payout_id = Some(e.payout_id);
            metadata.external_ref = Some(e.external_ref.clone());
            out.push(Change::PayoutTransactionStatus { user_id, payout_id: e.payout_id, status: TxStatus::Paid });
            TxType::PayoutPaid
        }
        Event::PayoutRejected(e) => {
            metadata.payout_id = Some(e.payout_id);
            metadata.reason = Some(e.reason.clone());
            out.push(Change::PayoutTransactionStatus { user_id, payout_id: e.payout_id, status: TxStatus::Rejected });
            TxType::PayoutRejected
        }
        Event::LedgerAdjusted(e) => {
            metadata.reason = Some(e.reason.clone());
            metadata.admin_id = Some(e.admin_id);
            TxType::Adjustment
        }
        _ => return,
    };
    let s = &commit.state_after;
    out.push(Change::Transaction(TransactionDoc {
        id: envelope.header.event_id,
        user_id,
        kind,
        status,
        coins: user_net_coins(user_id, commit),
        wallet_after: s.wallet_coins,
        earnings_after: s.earnings_coins,
        held_after: s.held_coins,
        metadata,
        created_at: millis(envelope.header.occurred_at),
        position,
    }));
}

/// The PaymentIntent and Checkout Session of a recorded
/// `checkout.session.completed`, read by the reader the webhook uses
/// (`events_schema::stripe`): a PaymentIntent given as its id or expanded.
fn checkout_session(e: &StripeEventRecorded) -> Option<(String, String)> {
    let session = events_schema::stripe::checkout_session(e)?;
    Some((session.payment_id, session.session_id))
}

fn streams(event: &Event, at: DateTime<Utc>, position: u64, out: &mut Vec<Change>) {
    match event {
        Event::StreamStarted(e) => out.push(Change::StreamStarted(StreamDoc {
            id: e.stream_id,
            host_id: e.host_id,
            title: e.title.clone(),
            category: e.category.clone(),
            status: StreamStatus::Live,
            is_live: true,
            start_time: millis(e.state_after.started_at),
            end_time: None,
            viewers: 0,
            peak_viewers: 0,
            gifts_coins: 0,
            position,
        })),
        Event::ViewerJoined(e) => out.push(Change::ViewerJoined { stream_id: e.stream_id, viewer_id: e.viewer_id }),
        Event::ViewerLeft(e) => out.push(Change::ViewerLeft { stream_id: e.stream_id, viewer_id: e.viewer_id }),
        Event::StreamEnded(e) => out.push(Change::StreamEnded { stream_id: e.stream_id, end_time: at }),
        Event::GiftSent(e) => out.push(Change::StreamGifts { stream_id: e.stream_id, coins: e.coins }),
        _ => {}
    }
}

fn payouts(event: &Event, at: DateTime<Utc>, position: u64, out: &mut Vec<Change>) {
    match event {
        Event::PayoutRequested(e) => out.push(Change::PayoutRequested(PayoutDoc {
            id: e.payout_id,
            user_id: e.user_id,
            coins: e.coins,
            fiat: e.fiat.clone(),
            destination: e.destination.clone(),
            status: PayoutStatus::Pending,
            external_ref: None,
            reason: None,
            requested_at: at,
            settled_at: None,
            position,
        })),
        Event::PayoutApproved(e) => out.push(Change::PayoutSettled {
            payout_id: e.payout_id,
            status: PayoutStatus::Paid,
            external_ref: Some(e.external_ref.clone()),
            reason: None,
            settled_at: at,
        }),
        Event::PayoutRejected(e) => out.push(Change::PayoutSettled {
            payout_id: e.payout_id,
            status: PayoutStatus::Rejected,
            external_ref: None,
            reason: Some(e.reason.clone()),
            settled_at: at,
        }),
        Event::AdjustmentProposed(e) => out.push(Change::AdjustmentProposed(AdjustmentDoc {
            id: e.adjustment_id,
            user_id: e.user_id,
            coins: e.coins,
            reason: e.reason.clone(),
            status: AdjustmentStatus::Proposed,
            proposed_by: e.proposed_by,
            decided_by: None,
            decision_reason: None,
            proposed_at: at,
            decided_at: None,
            position,
        })),
        Event::AdjustmentApproved(e) => out.push(Change::AdjustmentDecided {
            adjustment_id: e.adjustment_id,
            status: AdjustmentStatus::Applied,
            decided_by: e.approved_by,
            reason: None,
            decided_at: at,
        }),
        Event::AdjustmentRejected(e) => out.push(Change::AdjustmentDecided {
            adjustment_id: e.adjustment_id,
            status: AdjustmentStatus::Rejected,
            decided_by: e.rejected_by,
            reason: Some(e.reason.clone()),
            decided_at: at,
        }),
        _ => {}
    }
}

/// One posting per account per transfer. A user's account's balance after
/// each posting comes from the commit's `stateAfter` (walking the commit's
/// later postings back); a platform account's is the store's running total.
fn ledger(event: &Event, at: DateTime<Utc>, out: &mut Vec<Change>) {
    let Some(commit) = event.ledger_commit() else { return };
    let event_type = event.type_name();
    let first = out.len();
    for (index, t) in commit.transfers.iter().enumerate() {
        let Transfer { from, to, amount_coins } = *t;
        // Both sides of one transfer: the index is bounded by the commit's
        // size, which the domain bounds far below u32.
        let seq = u32::try_from(index).unwrap_or(u32::MAX / 2).saturating_mul(2);
        out.push(Change::Posting(Posting {
            account: from,
            seq,
            event_type,
            counterparty: to,
            coins: amount_coins.saturating_neg(),
            balance_after: None,
            created_at: at,
        }));
        out.push(Change::Posting(Posting {
            account: to,
            seq: seq.saturating_add(1),
            event_type,
            counterparty: from,
            coins: amount_coins,
            balance_after: None,
            created_at: at,
        }));
    }
    // Walk back from the state after the commit: the last posting on a user
    // account ends at the carried balance, each earlier one before the later
    // postings' amounts.
    let s = &commit.state_after;
    let mut wallet = s.wallet_coins;
    let mut earnings = s.earnings_coins;
    let mut held = s.held_coins;
    for change in out[first..].iter_mut().rev() {
        let Change::Posting(p) = change else { continue };
        let balance = match p.account {
            Account::Wallet(_) => &mut wallet,
            Account::Earnings(_) => &mut earnings,
            Account::PayoutHold(_) => &mut held,
            _ => continue,
        };
        p.balance_after = Some(*balance);
        *balance = balance.saturating_sub(p.coins);
    }
}

/// One change per ledger commit that moves coins of the five kinds, on the
/// UTC day the commit occurred.
fn ledger_daily(event: &Event, at: DateTime<Utc>, out: &mut Vec<Change>) {
    let totals = day_totals(event);
    if !totals.is_zero() {
        out.push(Change::LedgerDay { day: at.date_naive(), totals });
    }
}

/// What a ledger commit adds to its day, read off its transfers (the
/// amounts the ledger moved, whatever the event's other fields say), each
/// kind from the one event type that moves coins that way:
///
/// - purchased: `external:stripe -> wallet` in `ledger.coins_purchased`
///   (purchases, finance's credits, coins a won dispute gives back);
/// - gifted: `wallet -> transit:gifts` in `ledger.gift_sent`;
/// - credited: `transit:gifts -> earnings` in `ledger.gifts_received`
///   (the hosts' share; the commission to `platform:revenue` is not);
/// - paid out: `payout_hold -> external:payouts` in
///   `ledger.payout_approved`;
/// - reversed: `wallet -> external:stripe` in `ledger.purchase_refunded`
///   (refunds and dispute withdrawals).
///
/// Payout requests and rejections (coins that stay the host's) and admin
/// adjustments count in none. Saturating: a commit's amounts are checked
/// sums already, and a read model must not panic on a bad log.
pub fn day_totals(event: &Event) -> DayTotals {
    let mut totals = DayTotals::default();
    let Some(commit) = event.ledger_commit() else { return totals };
    for t in &commit.transfers {
        let field = match (event, t.from, t.to) {
            (Event::CoinsPurchased(_), Account::ExternalStripe, Account::Wallet(_)) => &mut totals.purchased_coins,
            (Event::GiftSent(_), Account::Wallet(_), Account::TransitGifts) => &mut totals.gifted_coins,
            (Event::GiftsReceived(_), Account::TransitGifts, Account::Earnings(_)) => &mut totals.credited_coins,
            (Event::PayoutApproved(_), Account::PayoutHold(_), Account::ExternalPayouts) => &mut totals.paid_out_coins,
            (Event::PurchaseRefunded(_), Account::Wallet(_), Account::ExternalStripe) => &mut totals.reversed_coins,
            _ => continue,
        };
        *field = field.saturating_add(t.amount_coins);
    }
    totals
}

fn leaderboards(event: &Event, out: &mut Vec<Change>) {
    if let Event::GiftSent(e) = event {
        out.push(Change::LeaderboardGift { stream_id: e.stream_id, user_id: e.user_id, coins: e.coins });
    }
}

fn stripe_payments(event: &Event, out: &mut Vec<Change>) {
    match event {
        Event::CoinsPurchased(e) => {
            out.push(Change::StripeIssued { payment_id: e.payment_id.clone(), user_id: e.user_id, coins: e.coins })
        }
        Event::PurchaseRefunded(e) => {
            out.push(Change::StripeReversed { payment_id: e.payment_id.clone(), user_id: e.user_id, coins: e.coins })
        }
        Event::StripeEventRecorded(e) => {
            if let Some((payment_id, session_id)) = checkout_session(e) {
                out.push(Change::StripeSession { payment_id, session_id });
            }
        }
        Event::PaymentPurchaseCredited(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        Event::PaymentRefundRecorded(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        Event::PaymentFlagged(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        Event::PaymentPosted(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        Event::PaymentDisputeRecorded(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        Event::PaymentResolved(e) => out.push(stripe_state(&e.payment_id, &e.state_after)),
        _ => {}
    }
}

fn stripe_state(payment_id: &str, s: &PaymentSnapshot) -> Change {
    let purchase = s.purchase.as_ref();
    let flags = s
        .flags
        .iter()
        .map(|f| {
            match f {
                PaymentFlag::UnknownUser => "unknown_user",
                PaymentFlag::UnknownPackage => "unknown_package",
                PaymentFlag::NoPaymentIntent => "no_payment_intent",
                PaymentFlag::InvalidRefund => "invalid_refund",
                PaymentFlag::Disputed => "disputed",
                PaymentFlag::AmountMismatch => "amount_mismatch",
            }
            .to_string()
        })
        .collect();
    Change::StripeState {
        payment_id: payment_id.to_string(),
        user_id: purchase.map(|p| p.user_id),
        state: StripeSide {
            package_id: purchase.map(|p| p.package_id.clone()),
            coins_expected: purchase.map_or(0, |p| p.coins),
            // What Stripe said was paid, credited or not.
            amount_cents: purchase.map(|p| p.amount_cents).or(s.claim.as_ref().map(|c| c.amount_cents)).unwrap_or(0),
            currency: purchase.map(|p| p.currency.clone()).or(s.claim.as_ref().map(|c| c.currency.clone())),
            charge_amount_cents: s.charge_amount_cents,
            amount_refunded_cents: s.amount_refunded_cents,
            flags,
            disputes: s
                .disputes
                .iter()
                .map(|d| DisputeDoc {
                    dispute_id: d.dispute_id.clone(),
                    amount_cents: d.amount_cents,
                    currency: d.currency.clone(),
                    status: d.status.clone(),
                    reason: d.reason.clone(),
                    fee_cents: d.fee_cents,
                    funds_withdrawn: d.funds_withdrawn,
                    funds_reinstated: d.funds_reinstated,
                    coins_reversed: d.coins_reversed,
                })
                .collect(),
            coins_refund_reversed: s.coins_reversed,
            coins_dispute_withdrawn: s.coins_dispute_withdrawn,
            coins_dispute_reinstated: s.coins_dispute_reinstated,
            claimed_user_id: s.claim.as_ref().map(|c| c.user_id.clone()),
            claimed_package_id: s.claim.as_ref().map(|c| c.package_id.clone()),
            resolution: s.resolution.as_ref().map(|r| ResolutionDoc {
                action: match r.action {
                    ResolutionAction::Credit => "credit",
                    ResolutionAction::Dismiss => "dismiss",
                }
                .to_string(),
                resolved_by: r.resolved_by,
                note: r.note.clone(),
                user_id: r.user_id,
                package_id: r.package_id.clone(),
                coins: r.coins,
            }),
        },
    }
}
