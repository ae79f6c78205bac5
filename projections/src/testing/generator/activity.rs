//! Registrations, streams, gifts and credits, payouts, adjustments, roles.

use events_schema::{
    Account, Actor, AdjustmentApproved, AdjustmentProposed, AdjustmentRejected, CommandRecorded, Event, GiftSent,
    GiftsReceived, LedgerAdjusted, LedgerSnapshot, Money, PayoutApproved, PayoutRejected, PayoutRequested,
    PendingPayout, ReceivedGift, ReservationClaimed, ReservationKind, Role, SessionEndReason, SessionEnded,
    SessionRotated, StreamEnded, StreamSnapshot, StreamStarted, StreamStatus, UserRegistered, UserRolesChanged,
    UserSessionsRevoked, UserSnapshot, ViewerJoined, ViewerLeft,
};

use super::*;

impl Generator {
    pub(super) fn register(&mut self) {
        let n = self.users.len();
        let id = self.uuid();
        let email = format!("user{n}@example.com");
        let username = format!("user{n}");
        let roles = if n == 0 { vec![Role::User, Role::Admin, Role::Finance] } else { vec![Role::User] };
        let meta = self.meta(Actor::user(id));
        let mut user_chain = Chain::new();
        self.emit(
            &meta,
            Event::UserRegistered(UserRegistered {
                user_id: id,
                email: email.clone(),
                username: username.clone(),
                password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n}"),
                roles: roles.clone(),
            }),
            Some(&mut user_chain),
        );
        for (kind, value) in [(ReservationKind::Email, &email), (ReservationKind::Username, &username)] {
            let meta = self.meta(Actor::user(id));
            let event = Event::ReservationClaimed(ReservationClaimed { kind, value: value.clone(), user_id: id });
            self.emit(&meta, event, None);
        }
        let meta = self.meta(Actor::user(id));
        self.emit(
            &meta,
            Event::CommandRecorded(CommandRecorded {
                scope: format!("user:{id}"),
                command_id: format!("register-{n}"),
                fingerprint: format!("{:064x}", n),
                event_count: 3,
                event_positions: Vec::new(),
            }),
            None,
        );
        self.users.push(GenUser {
            id,
            email,
            username,
            roles,
            sessions_epoch: 0,
            user_chain,
            ledger_chain: Chain::new(),
            ledger: LedgerSnapshot::default(),
        });
        if self.hosts.len() < usize::try_from(self.config.hosts).unwrap_or(0) && n > 0 {
            self.hosts.push(GenHost { user: n, channel: Chain::new(), live: None, pending: Vec::new() });
        }
    }

    pub(super) fn random_user(&mut self) -> usize {
        self.rng.index(self.users.len())
    }

    pub(super) fn start_stream(&mut self) {
        if self.hosts.is_empty() {
            return self.purchase(false);
        }
        let offline: Vec<usize> = (0..self.hosts.len()).filter(|h| self.hosts[*h].live.is_none()).collect();
        if offline.is_empty() {
            return self.join();
        }
        let h = offline[self.rng.index(offline.len())];
        let host_id = self.users[self.hosts[h].user].id;
        let stream_id = self.uuid();
        let meta = self.meta(Actor::user(host_id));
        let snapshot = StreamSnapshot { host_id, status: StreamStatus::Live, started_at: meta.occurred_at };
        let categories = ["music", "gaming", "talk", "sports"];
        let category = categories[self.rng.index(categories.len())].to_string();
        let mut chain = Chain::new();
        let event = Event::StreamStarted(StreamStarted {
            stream_id,
            host_id,
            title: format!("stream {}", self.counter),
            category,
            state_after: snapshot.clone(),
        });
        self.emit(&meta, event, Some(&mut chain));
        let mut channel = std::mem::replace(&mut self.hosts[h].channel, Chain::new());
        let event = Event::ChannelWentLive(events_schema::ChannelWentLive { host_id, stream_id });
        self.emit(&meta, event, Some(&mut channel));
        self.hosts[h].channel = channel;
        self.hosts[h].live = Some(GenStream { id: stream_id, chain, snapshot, viewers: Vec::new() });
    }

    pub(super) fn live_host(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.hosts.len()).filter(|h| self.hosts[*h].live.is_some()).collect();
        if live.is_empty() { None } else { Some(live[self.rng.index(live.len())]) }
    }

    pub(super) fn end_stream(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_id = self.users[self.hosts[h].user].id;
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        let meta = self.meta(Actor::user(host_id));
        let state_after = StreamSnapshot { status: StreamStatus::Ended, ..stream.snapshot.clone() };
        let event = Event::StreamEnded(StreamEnded { stream_id: stream.id, host_id, ended_by: host_id, state_after });
        self.emit(&meta, event, Some(&mut stream.chain));
        let mut channel = std::mem::replace(&mut self.hosts[h].channel, Chain::new());
        let event = Event::ChannelWentOffline(events_schema::ChannelWentOffline { host_id, stream_id: stream.id });
        self.emit(&meta, event, Some(&mut channel));
        self.hosts[h].channel = channel;
    }

    pub(super) fn join(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_user = self.hosts[h].user;
        let viewer = self.random_user();
        if viewer == host_user {
            return;
        }
        let viewer_id = self.users[viewer].id;
        let meta = self.meta(Actor::user(viewer_id));
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        let event =
            Event::ViewerJoined(ViewerJoined { stream_id: stream.id, viewer_id, state_after: stream.snapshot.clone() });
        self.emit(&meta, event, Some(&mut stream.chain));
        // Repeated joins happen (a second device): the projection dedupes.
        if !stream.viewers.contains(&viewer) && stream.viewers.len() < VIEWERS_TRACKED_MAX {
            stream.viewers.push(viewer);
        }
        self.hosts[h].live = Some(stream);
    }

    pub(super) fn leave(&mut self) {
        let Some(h) = self.live_host() else { return self.join() };
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        // Mostly a viewer present; sometimes one who is not (a stale client).
        let viewer = if !stream.viewers.is_empty() && self.rng.percent(90) {
            let i = self.rng.index(stream.viewers.len());
            stream.viewers.swap_remove(i)
        } else {
            self.random_user()
        };
        let viewer_id = self.users[viewer].id;
        let meta = self.meta(Actor::user(viewer_id));
        let event =
            Event::ViewerLeft(ViewerLeft { stream_id: stream.id, viewer_id, state_after: stream.snapshot.clone() });
        self.emit(&meta, event, Some(&mut stream.chain));
        self.hosts[h].live = Some(stream);
    }

    pub(super) fn gift(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_user = self.hosts[h].user;
        let (stream_id, present) = match &self.hosts[h].live {
            Some(s) => (s.id, s.viewers.clone()),
            None => return,
        };
        let viewer = if !present.is_empty() && self.rng.percent(80) {
            present[self.rng.index(present.len())]
        } else {
            self.random_user()
        };
        if viewer == host_user {
            return;
        }
        let (gift_id, unit_coins) = GIFTS[self.rng.index(GIFTS.len())];
        let quantity = i64::try_from(self.rng.below(3)).unwrap_or(0) + 1;
        let coins = unit_coins * quantity;
        if self.users[viewer].ledger.wallet_coins < coins {
            return self.purchase(false);
        }
        let viewer_id = self.users[viewer].id;
        let host_id = self.users[host_user].id;
        let meta = self.meta(Actor::user(viewer_id));
        let commit = self.commit(
            viewer,
            vec![transfer(Account::Wallet(viewer_id), Account::TransitGifts, coins)],
            PendingEdit::None,
        );
        let event = Event::GiftSent(GiftSent {
            user_id: viewer_id,
            stream_id,
            host_id,
            gift_id: gift_id.to_string(),
            quantity,
            unit_coins,
            coins,
            host_share_bps: HOST_SHARE_BPS,
            commit,
        });
        let position = self.ledger_event(viewer, &meta, event);
        self.hosts[h].pending.push(PendingCredit {
            source_position: position,
            viewer_id,
            stream_id,
            coins,
            host_share_bps: HOST_SHARE_BPS,
        });
        if self.hosts[h].pending.len() >= PENDING_CREDITS_MAX {
            self.credit(h);
        }
    }

    pub(super) fn credit_host(&mut self) {
        let with_pending: Vec<usize> = (0..self.hosts.len()).filter(|h| !self.hosts[*h].pending.is_empty()).collect();
        if with_pending.is_empty() {
            return self.gift();
        }
        let h = with_pending[self.rng.index(with_pending.len())];
        self.credit(h);
    }

    /// The gift reactor's batch: the host's side of its pending gifts.
    pub(super) fn credit(&mut self, h: usize) {
        let pending = std::mem::take(&mut self.hosts[h].pending);
        let Some(last) = pending.last().map(|p| p.source_position) else { return };
        let user = self.hosts[h].user;
        let host_id = self.users[user].id;
        let mut gifts = Vec::with_capacity(pending.len());
        let (mut host_total, mut platform_total) = (0i64, 0i64);
        for p in pending {
            let host_coins = p.coins * i64::from(p.host_share_bps) / 10_000;
            host_total += host_coins;
            platform_total += p.coins - host_coins;
            gifts.push(ReceivedGift {
                source_position: p.source_position,
                viewer_id: p.viewer_id,
                stream_id: p.stream_id,
                coins: p.coins,
                host_coins,
            });
        }
        let mut transfers = Vec::with_capacity(2);
        if host_total > 0 {
            transfers.push(transfer(Account::TransitGifts, Account::Earnings(host_id), host_total));
        }
        if platform_total > 0 {
            transfers.push(transfer(Account::TransitGifts, Account::PlatformRevenue, platform_total));
        }
        let meta = self.meta(Actor::system("gift-reactor"));
        let commit = self.commit(user, transfers, PendingEdit::CreditedUpTo(last));
        let event = Event::GiftsReceived(GiftsReceived { user_id: host_id, gifts, commit });
        self.ledger_event(user, &meta, event);
    }

    pub(super) fn request_payout(&mut self) {
        let h = self.rng.index(self.hosts.len().max(1));
        let Some(user) = self.hosts.get(h).map(|h| h.user) else { return self.purchase(false) };
        let s = &self.users[user].ledger;
        if s.earnings_coins < PAYOUT_MIN_COINS || s.pending_payouts.len() >= PENDING_PAYOUTS_MAX {
            return self.credit_host();
        }
        let coins = PAYOUT_MIN_COINS
            + i64::try_from(self.rng.below(u64::try_from(s.earnings_coins - PAYOUT_MIN_COINS + 1).unwrap_or(1)))
                .unwrap_or(0);
        let id = self.users[user].id;
        let payout_id = self.uuid();
        let meta = self.meta(Actor::user(id));
        // 0.01 usd per coin, exact: coins / 100 with two decimals.
        let amount = format!("{}.{:02}", coins / 100, coins % 100).parse().unwrap_or_default();
        let commit = self.commit(
            user,
            vec![transfer(Account::Earnings(id), Account::PayoutHold(id), coins)],
            PendingEdit::Add(PendingPayout { payout_id, coins }),
        );
        let event = Event::PayoutRequested(PayoutRequested {
            user_id: id,
            payout_id,
            coins,
            fiat: Money { amount, currency: "usd".into() },
            destination: format!("acct_{}", user),
            commit,
        });
        self.ledger_event(user, &meta, event);
    }

    pub(super) fn settle_payout(&mut self) {
        let with_pending: Vec<usize> = (0..self.hosts.len())
            .filter(|h| !self.users[self.hosts[*h].user].ledger.pending_payouts.is_empty())
            .collect();
        if with_pending.is_empty() {
            return self.request_payout();
        }
        let user = self.hosts[with_pending[self.rng.index(with_pending.len())]].user;
        let id = self.users[user].id;
        let PendingPayout { payout_id, coins } = self.users[user].ledger.pending_payouts[0].clone();
        let admin = self.users[0].id;
        let meta = self.meta(Actor::admin(admin));
        if self.rng.percent(80) {
            let commit = self.commit(
                user,
                vec![transfer(Account::PayoutHold(id), Account::ExternalPayouts, coins)],
                PendingEdit::Remove(payout_id),
            );
            let event = Event::PayoutApproved(PayoutApproved {
                user_id: id,
                payout_id,
                coins,
                external_ref: format!("po_{}", self.counter),
                commit,
            });
            self.ledger_event(user, &meta, event);
        } else {
            let commit = self.commit(
                user,
                vec![transfer(Account::PayoutHold(id), Account::Earnings(id), coins)],
                PendingEdit::Remove(payout_id),
            );
            let event = Event::PayoutRejected(PayoutRejected {
                user_id: id,
                payout_id,
                coins,
                reason: "destination account closed".into(),
                commit,
            });
            self.ledger_event(user, &meta, event);
        }
    }

    pub(super) fn adjust(&mut self) {
        let user = self.random_user();
        let id = self.users[user].id;
        let admin = self.users[0].id;
        // One in four goes through four eyes: proposed by one admin, then
        // approved (and applied) or rejected by another.
        if self.users.len() > 2 && user > 1 && self.rng.percent(25) {
            return self.four_eyes(user);
        }
        let wallet = self.users[user].ledger.wallet_coins;
        let (coins, transfers) = if wallet >= 50 && self.rng.percent(40) {
            (-50, vec![transfer(Account::Wallet(id), Account::PlatformAdjustments, 50)])
        } else {
            (25, vec![transfer(Account::PlatformAdjustments, Account::Wallet(id), 25)])
        };
        let meta = self.meta(Actor::admin(admin));
        let commit = self.commit(user, transfers, PendingEdit::None);
        let event = Event::LedgerAdjusted(LedgerAdjusted {
            user_id: id,
            coins,
            reason: "support ticket".into(),
            admin_id: admin,
            commit,
        });
        self.ledger_event(user, &meta, event);
    }

    /// A large credit proposed by the first user (an admin), then approved
    /// by the second (the `adjustment.approved` and its `ledger.adjusted`)
    /// or rejected.
    fn four_eyes(&mut self, user: usize) {
        let id = self.users[user].id;
        let (proposer, second) = (self.users[0].id, self.users[1].id);
        let adjustment_id = self.uuid();
        let coins = 20_000;
        let mut chain = Chain::new();
        let meta = self.meta(Actor::admin(proposer));
        let proposed = Event::AdjustmentProposed(AdjustmentProposed {
            adjustment_id,
            user_id: id,
            coins,
            reason: "migration".into(),
            proposed_by: proposer,
        });
        self.emit(&meta, proposed, Some(&mut chain));
        let meta = self.meta(Actor::admin(second));
        if self.rng.percent(70) {
            let transfers = vec![transfer(Account::PlatformAdjustments, Account::Wallet(id), coins)];
            let commit = self.commit(user, transfers, PendingEdit::None);
            let adjusted = Event::LedgerAdjusted(LedgerAdjusted {
                user_id: id,
                coins,
                reason: "migration".into(),
                admin_id: second,
                commit,
            });
            self.ledger_event(user, &meta, adjusted);
            let approved = Event::AdjustmentApproved(AdjustmentApproved {
                adjustment_id,
                user_id: id,
                coins,
                proposed_by: proposer,
                approved_by: second,
            });
            self.emit(&meta, approved, Some(&mut chain));
        } else {
            let rejected = Event::AdjustmentRejected(AdjustmentRejected {
                adjustment_id,
                user_id: id,
                coins,
                proposed_by: proposer,
                rejected_by: second,
                reason: "no ticket".into(),
            });
            self.emit(&meta, rejected, Some(&mut chain));
        }
    }

    pub(super) fn command_record(&mut self) {
        let user = self.random_user();
        let id = self.users[user].id;
        let meta = self.meta(Actor::user(id));
        let event = Event::CommandRecorded(CommandRecorded {
            scope: format!("user:{id}"),
            command_id: format!("key-{}", self.counter),
            fingerprint: format!("{:064x}", self.counter),
            event_count: 1,
            event_positions: Vec::new(),
        });
        self.emit(&meta, event, None);
    }

    pub(super) fn change_roles(&mut self) {
        let user = self.random_user();
        let u = &mut self.users[user];
        let (granted, revoked) = if u.roles.contains(&Role::Ops) {
            u.roles.retain(|r| *r != Role::Ops);
            (vec![], vec![Role::Ops])
        } else {
            u.roles.push(Role::Ops);
            (vec![Role::Ops], vec![])
        };
        let state_after = UserSnapshot {
            email: u.email.clone(),
            username: u.username.clone(),
            roles: u.roles.clone(),
            sessions_epoch: u.sessions_epoch,
        };
        let id = u.id;
        let admin = self.users[0].id;
        let meta = self.meta(Actor::admin(admin));
        let event = Event::UserRolesChanged(UserRolesChanged { user_id: id, granted, revoked, state_after });
        let mut chain = std::mem::replace(&mut self.users[user].user_chain, Chain::new());
        self.emit(&meta, event, Some(&mut chain));
        self.users[user].user_chain = chain;
    }

    /// A login's session: rotated once, then (every other time) ended; or,
    /// one time in four, every session of a user revoked by the admin.
    pub(super) fn session(&mut self) {
        let user = self.random_user();
        let id = self.users[user].id;
        if self.rng.percent(25) {
            let u = &mut self.users[user];
            u.sessions_epoch += 1;
            let state_after = UserSnapshot {
                email: u.email.clone(),
                username: u.username.clone(),
                roles: u.roles.clone(),
                sessions_epoch: u.sessions_epoch,
            };
            let admin = self.users[0].id;
            let meta = self.meta(Actor::admin(admin));
            let event = Event::UserSessionsRevoked(UserSessionsRevoked { user_id: id, revoked_by: admin, state_after });
            let mut chain = std::mem::replace(&mut self.users[user].user_chain, Chain::new());
            self.emit(&meta, event, Some(&mut chain));
            self.users[user].user_chain = chain;
            return;
        }
        let family_id = self.uuid();
        let mut chain = Chain::new();
        let meta = self.meta(Actor::user(id));
        let rotated = Event::SessionRotated(SessionRotated { family_id, user_id: id, generation: 1 });
        self.emit(&meta, rotated, Some(&mut chain));
        if self.rng.percent(50) {
            let meta = self.meta(Actor::user(id));
            let reason = if self.rng.percent(50) { SessionEndReason::Logout } else { SessionEndReason::Reuse };
            let ended = Event::SessionEnded(SessionEnded { family_id, user_id: id, generation: 1, reason });
            self.emit(&meta, ended, Some(&mut chain));
        }
    }
}
