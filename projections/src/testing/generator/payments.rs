//! Coin purchases (some through Checkout Sessions) and their refunds or
//! lost disputes.

use events_schema::{
    Account, Actor, ActorKind, CoinsPurchased, Event, PaymentDispute, PaymentDisputeRecorded, PaymentFlag,
    PaymentFlagged, PaymentPosted, PaymentPurchase, PaymentPurchaseCredited, PaymentRefundRecorded, PaymentResolution,
    PaymentResolved, PaymentSnapshot, PurchaseRefunded, ResolutionAction, StripeEventRecorded,
};

use super::*;

impl Generator {
    pub(super) fn purchase(&mut self, with_session: bool) {
        let user = self.random_user();
        let id = self.users[user].id;
        let coins = PACKAGES[self.rng.index(PACKAGES.len())];
        self.counter += 1;
        let payment_id = format!("pi_{}", self.counter);
        let stripe_event_id = format!("evt_{}", self.counter);
        if with_session {
            // The Stripe event is recorded first, then the purchase: the
            // order the webhook handler appends them in.
            let session_id = format!("cs_{}", self.counter);
            // Every other session carries its PaymentIntent expanded (an
            // object), as Stripe sends it when asked to expand it; the
            // others name it by id. Drawn from the counter, not the random
            // sequence, so that the rest of the log stays the same.
            let payment_intent = if self.counter.is_multiple_of(2) {
                serde_json::json!({"id": payment_id, "object": "payment_intent"})
            } else {
                serde_json::json!(payment_id)
            };
            let body = serde_json::json!({
                "id": stripe_event_id,
                "type": "checkout.session.completed",
                "data": {"object": {
                    "id": session_id, "object": "checkout.session", "payment_intent": payment_intent,
                    "payment_status": "paid", "client_reference_id": id.to_string(),
                    "metadata": {"userId": id.to_string(), "packageId": format!("coins-{coins}")}
                }}
            })
            .to_string();
            let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(stripe_event_id.clone()) });
            let event = Event::StripeEventRecorded(StripeEventRecorded {
                stripe_event_id: stripe_event_id.clone(),
                stripe_event_type: "checkout.session.completed".into(),
                stripe_created: self.clock.timestamp(),
                body,
            });
            self.emit(&meta, event, None);
        }
        let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(stripe_event_id) });
        // The webhook's single appends: the payment's decision, its posting
        // on the buyer's ledger (naming the decision's position), the mark.
        let purchase = PaymentPurchase {
            user_id: id,
            package_id: format!("coins-{coins}"),
            coins,
            amount_cents: coins,
            currency: "usd".into(),
        };
        let state_after = PaymentSnapshot {
            purchase: Some(purchase.clone()),
            posted_position: Some(0),
            ..PaymentSnapshot::default()
        };
        let credited = Event::PaymentPurchaseCredited(PaymentPurchaseCredited {
            payment_id: payment_id.clone(),
            stripe_event_id: format!("evt_{}", self.counter),
            purchase,
            state_after: state_after.clone(),
        });
        let mut chain = Chain::new();
        let decision = self.emit(&meta, credited, Some(&mut chain));
        self.post_payment(user, &meta, (&payment_id, coins, Posting::Purchase), decision, state_after, &mut chain);
        self.payment_chains.insert(payment_id.clone(), chain);
        // Now and then a flagged payment beside it.
        if self.rng.percent(5) {
            let flagged_state = PaymentSnapshot {
                flags: vec![PaymentFlag::UnknownUser],
                posted_position: Some(0),
                ..PaymentSnapshot::default()
            };
            let flagged = Event::PaymentFlagged(PaymentFlagged {
                payment_id: format!("pi_flagged_{}", self.counter),
                stripe_event_id: format!("evt_f{}", self.counter),
                flag: PaymentFlag::UnknownUser,
                detail: "nobody".into(),
                state_after: flagged_state.clone(),
            });
            let mut flagged_chain = Chain::new();
            self.emit(&meta, flagged, Some(&mut flagged_chain));
            // Every other one is dismissed by finance (from the counter, not
            // the random sequence, so that the rest of the log stays the
            // same).
            if self.counter.is_multiple_of(2) {
                let resolution = PaymentResolution {
                    action: ResolutionAction::Dismiss,
                    resolved_by: id,
                    note: "a test payment".into(),
                    user_id: None,
                    package_id: None,
                    coins: 0,
                };
                let dismissed = Event::PaymentResolved(PaymentResolved {
                    payment_id: format!("pi_flagged_{}", self.counter),
                    resolution: resolution.clone(),
                    purchase: None,
                    state_after: PaymentSnapshot { resolution: Some(resolution), ..flagged_state },
                });
                self.emit(&meta, dismissed, Some(&mut flagged_chain));
            }
        }
        if self.purchases.len() >= PURCHASES_TRACKED_MAX
            && let Some((_, dropped, _, _)) = self.purchases.pop_front()
        {
            self.payment_chains.remove(&dropped);
        }
        self.purchases.push_back((user, payment_id, coins, decision));
    }

    pub(super) fn refund(&mut self) {
        let Some((user, payment_id, coins, posted)) = self.purchases.pop_front() else {
            return self.purchase(false);
        };
        let id = self.users[user].id;
        let bought = coins;
        // Partial or full; may drive the wallet negative, as refunds may.
        let coins = if self.rng.percent(50) { coins } else { (coins / 2).max(1) };
        let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(format!("evt_r{}", self.counter)) });
        // A cent per coin: the refund's share of the amount is its coins.
        let purchase = PaymentPurchase {
            user_id: id,
            package_id: format!("coins-{bought}"),
            coins: bought,
            amount_cents: bought,
            currency: "usd".into(),
        };
        let mut chain = self.payment_chains.remove(&payment_id).unwrap_or_else(Chain::new);
        // Every other reversal is a lost dispute rather than a refund (it
        // moves the same coins the same way). Drawn from the counter, not
        // the random sequence, so that the rest of the log stays the same.
        if self.counter.is_multiple_of(2) {
            let dispute = PaymentDispute {
                dispute_id: format!("dp_{}", self.counter),
                amount_cents: coins,
                currency: "usd".into(),
                status: "needs_response".into(),
                reason: "fraudulent".into(),
                fee_cents: 1500,
                balance_transactions: 1,
                funds_withdrawn: true,
                funds_reinstated: false,
                coins_reversed: coins,
            };
            let state_after = PaymentSnapshot {
                purchase: Some(purchase),
                flags: vec![PaymentFlag::Disputed],
                disputes: vec![dispute.clone()],
                coins_dispute_withdrawn: coins,
                posted_position: Some(posted),
                ..PaymentSnapshot::default()
            };
            let recorded = Event::PaymentDisputeRecorded(PaymentDisputeRecorded {
                payment_id: payment_id.clone(),
                stripe_event_id: Some(format!("evt_d{}", self.counter)),
                dispute,
                coins,
                state_after: state_after.clone(),
            });
            let decision = self.emit(&meta, recorded, Some(&mut chain));
            let posting = (payment_id.as_str(), coins, Posting::Refund);
            return self.post_payment(user, &meta, posting, decision, state_after, &mut chain);
        }
        let state_after = PaymentSnapshot {
            purchase: Some(purchase),
            charge_amount_cents: bought,
            amount_refunded_cents: coins,
            coins_reversed: coins,
            flags: vec![],
            posted_position: Some(posted),
            ..PaymentSnapshot::default()
        };
        let recorded = Event::PaymentRefundRecorded(PaymentRefundRecorded {
            payment_id: payment_id.clone(),
            stripe_event_id: Some(format!("evt_r{}", self.counter)),
            charge_amount_cents: bought,
            amount_refunded_cents: coins,
            coins,
            state_after: state_after.clone(),
        });
        let decision = self.emit(&meta, recorded, Some(&mut chain));
        self.post_payment(user, &meta, (&payment_id, coins, Posting::Refund), decision, state_after, &mut chain);
    }

    /// The webhook's posting of the payment decision at `decision`: the
    /// coins moved on the buyer's ledger (naming the decision), then the
    /// payment's mark.
    fn post_payment(
        &mut self,
        user: usize,
        meta: &EventMeta,
        (payment_id, coins, posting): (&str, i64, Posting),
        decision: u64,
        state_after: PaymentSnapshot,
        chain: &mut Chain,
    ) {
        let id = self.users[user].id;
        let payment_id = payment_id.to_owned();
        let (from, to) = match posting {
            Posting::Purchase => (Account::ExternalStripe, Account::Wallet(id)),
            Posting::Refund => (Account::Wallet(id), Account::ExternalStripe),
        };
        let commit = self.commit(user, vec![transfer(from, to, coins)], PendingEdit::None);
        let event = match posting {
            Posting::Purchase => Event::CoinsPurchased(CoinsPurchased {
                user_id: id,
                payment_id: payment_id.clone(),
                coins,
                source_position: decision,
                commit,
            }),
            Posting::Refund => Event::PurchaseRefunded(PurchaseRefunded {
                user_id: id,
                payment_id: payment_id.clone(),
                coins,
                source_position: decision,
                commit,
            }),
        };
        let ledger_position = self.ledger_event(user, meta, event);
        let posted = Event::PaymentPosted(PaymentPosted {
            payment_id,
            posted_position: decision,
            ledger_position,
            state_after: PaymentSnapshot { posted_position: Some(decision), ..state_after },
        });
        self.emit(meta, posted, Some(chain));
    }
}

/// Which way a payment's posting moves coins.
#[derive(Debug, Clone, Copy)]
enum Posting {
    Purchase,
    Refund,
}
