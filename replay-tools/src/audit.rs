//! `audit`: the checks of the design's "Tamper evidence", over the whole
//! log (or an export file), in one pass:
//!
//! - every hash chain (`chain`);
//! - every ledger commit replayed on its aggregate's previous state
//!   (`domain::ledger::check_commit`: positive transfers, own accounts
//!   only, the carried state equal to what the transfers give, earnings and
//!   hold never negative, the hold equal to the pending payouts), and the
//!   wallet rule (spending and negative adjustments never overdraw it; only
//!   a refund may);
//! - the balances of every account from the transfers alone: their sum is
//!   zero after the last event and at every checkpoint given (projectors',
//!   reactor's); `transit:gifts` never negative, and at the end equal to the
//!   gifts not yet credited; every gift credited at most once; each user's
//!   balances equal to the state their last commit carries;
//! - reconciliation with Stripe as the log holds it: per payment, coins
//!   purchased once; reversals (refunds plus disputes' withdrawals) never
//!   more than what was credited; won disputes' reinstatements never more
//!   than what disputes withdrew; `external:stripe` equal to minus the net
//!   (purchased + reinstated - refunded - withdrawn); every payment decision that moves
//!   coins posted at most once, by a commit of its coins naming its
//!   position, and marked posted only after (decisions still pending are
//!   counted: a crash leaves one until Stripe's next delivery).
//!
//! - the read side: the serving ledger read model's account balances
//!   equal the log's at the ledger projection's checkpoint (when a store is
//!   given and its checkpoint holds still while it is read).
//!
//! Reads only; the exit status says whether every check passed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use commands::log::{EventLog, JetStreamLog};
use domain::ledger::{LedgerState, check_commit, initial_state};
use events_schema::{Account, Envelope, Event};
use futures_util::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::archive::{ArchiveReader, Item};
use crate::chain::ChainVerifier;
use crate::progress::Progress;

/// Findings listed in the report, at most (all are counted).
const FINDINGS_LISTED_MAX: usize = 100;

/// A position at which the zero sum is checked, with its owner's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedCheckpoint {
    pub name: String,
    pub position: u64,
}

/// The serving ledger read model's balances at its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadModelLedger {
    /// `projector ledger@N`.
    pub name: String,
    pub position: u64,
    pub balances: HashMap<Account, i64>,
}

/// Tries to read the ledger read model while its checkpoint holds still.
const READ_MODEL_TRIES_MAX: u32 = 5;

/// The serving ledger read model's balances, read while its checkpoint
/// holds still; `None` when it kept moving (a busy projector).
pub async fn read_model_ledger(store: &dyn projections::ReadStore) -> anyhow::Result<Option<ReadModelLedger>> {
    use projections::{AnyDoc, Collection, Projection, ProjectionVersion};
    let version = store.active_version(Projection::Ledger).await?;
    let target = ProjectionVersion::new(Projection::Ledger, version);
    let checkpoint = || async {
        let checkpoints = store.checkpoints().await?;
        Ok::<u64, anyhow::Error>(
            checkpoints
                .iter()
                .find(|c| c.projection == Projection::Ledger && c.version == version)
                .map_or(0, |c| c.position),
        )
    };
    for _ in 0..READ_MODEL_TRIES_MAX {
        let before = checkpoint().await?;
        let mut balances = HashMap::new();
        let mut after_key: Option<String> = None;
        // Bounded by the number of accounts: each page moves the key on.
        loop {
            let page = store
                .scan(target, Collection::LedgerAccounts, after_key.as_deref(), projections::store::SCAN_LIMIT_MAX)
                .await?;
            for doc in page.docs {
                if let AnyDoc::LedgerAccount(account) = doc {
                    balances.insert(account.account, account.balance);
                }
            }
            match page.next_key {
                Some(key) => after_key = Some(key),
                None => break,
            }
        }
        if checkpoint().await? == before {
            return Ok(Some(ReadModelLedger {
                name: format!("projector ledger@{version}"),
                position: before,
                balances,
            }));
        }
    }
    Ok(None)
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub check: &'static str,
    pub position: Option<u64>,
    pub subject: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.check)?;
        if let Some(position) = self.position {
            write!(f, " position {position}")?;
        }
        if let Some(subject) = &self.subject {
            write!(f, ", subject {subject}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSum {
    pub name: String,
    pub position: u64,
    pub total_coins: i64,
    pub transit_gifts_coins: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciliation {
    pub payments: u64,
    pub coins_purchased: i64,
    pub coins_refunded: i64,
    /// Coins disputes took back, and coins won disputes credited again.
    pub coins_dispute_withdrawn: i64,
    pub coins_dispute_reinstated: i64,
    pub external_stripe_coins: i64,
    /// Payment decisions that move coins with no posting yet.
    pub decisions_unposted: u64,
    /// `external:stripe == -(purchased + reinstated - refunded - withdrawn)`
    /// and no payment reversed beyond what it credited, reinstated beyond
    /// what disputes withdrew, or purchased twice.
    pub balanced: bool,
}

/// The audit's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub source: String,
    pub events: u64,
    pub subjects: u64,
    pub last_position: u64,
    pub ledger_commits: u64,
    pub users: u64,
    pub accounts: u64,
    pub total_coins_at_end: i64,
    pub transit_gifts_coins: i64,
    pub gifts_sent: u64,
    pub gifts_credited: u64,
    pub gifts_uncredited: u64,
    pub checkpoints: Vec<CheckpointSum>,
    /// The position at which the ledger read model was compared with the
    /// log, if it was.
    pub read_model_compared_at: Option<u64>,
    pub reconciliation: Reconciliation,
    /// Every failed check, counted.
    pub failures: u64,
    /// The first failures, in log order.
    pub findings: Vec<Finding>,
    pub passed: bool,
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Payment {
    purchased: i64,
    purchases: u32,
    refunded: i64,
    dispute_withdrawn: i64,
    dispute_reinstated: i64,
}

impl Payment {
    /// Coins credited: the purchase and won disputes' credits back.
    fn credited(&self) -> i64 {
        self.purchased.saturating_add(self.dispute_reinstated)
    }

    /// Coins taken back: refunds and disputes' withdrawals.
    fn reversed(&self) -> i64 {
        self.refunded.saturating_add(self.dispute_withdrawn)
    }

    fn consistent(&self) -> bool {
        self.purchases <= 1 && self.reversed() <= self.credited() && self.dispute_reinstated <= self.dispute_withdrawn
    }
}

/// What a payment decision that moves coins is, so that its posting is
/// counted as what it is (a won dispute's credit back is posted as a
/// purchase commit, a dispute's withdrawal as a refund commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecisionKind {
    Purchase,
    Refund,
    DisputeWithdrawal,
    DisputeReinstatement,
}

/// The audit's state, fed message by message in log order.
#[derive(Debug)]
pub struct Auditor {
    chains: ChainVerifier,
    ledgers: HashMap<Uuid, LedgerState>,
    balances: HashMap<Account, i64>,
    /// Gifts sent and not yet credited: source position -> coins.
    uncredited: HashMap<u64, i64>,
    payments: HashMap<String, Payment>,
    /// Payment decisions that move coins, not posted yet: position ->
    /// (payment id, coins, kind).
    unposted: HashMap<u64, (String, i64, DecisionKind)>,
    checkpoints: Vec<NamedCheckpoint>,
    next_checkpoint: usize,
    read_model: Option<ReadModelLedger>,
    read_model_checked: bool,
    sums: Vec<CheckpointSum>,
    events: u64,
    last_position: u64,
    ledger_commits: u64,
    gifts_sent: u64,
    gifts_credited: u64,
    failures: u64,
    findings: Vec<Finding>,
}

fn get(balances: &HashMap<Account, i64>, account: &Account) -> i64 {
    balances.get(account).copied().unwrap_or(0)
}

impl Auditor {
    /// An auditor that checks the zero sum at `checkpoints` too.
    pub fn new(mut checkpoints: Vec<NamedCheckpoint>) -> Auditor {
        checkpoints.sort_by_key(|c| c.position);
        let mut auditor = Auditor {
            chains: ChainVerifier::new(),
            ledgers: HashMap::new(),
            balances: HashMap::new(),
            uncredited: HashMap::new(),
            payments: HashMap::new(),
            unposted: HashMap::new(),
            checkpoints,
            next_checkpoint: 0,
            read_model: None,
            read_model_checked: false,
            sums: Vec::new(),
            events: 0,
            last_position: 0,
            ledger_commits: 0,
            gifts_sent: 0,
            gifts_credited: 0,
            failures: 0,
            findings: Vec::new(),
        };
        auditor.record_checkpoints(0);
        auditor
    }

    /// Compares the log's balances with `ledger` at its checkpoint too.
    pub fn with_read_model(mut self, ledger: ReadModelLedger) -> Auditor {
        self.read_model = Some(ledger);
        self.compare_read_model(self.last_position);
        self
    }

    /// At the read model's checkpoint: every account's balance from the
    /// log equals the read model's.
    fn compare_read_model(&mut self, position: u64) {
        let Some(ledger) = &self.read_model else { return };
        if self.read_model_checked || ledger.position != position {
            return;
        }
        self.read_model_checked = true;
        let mut accounts: Vec<Account> = ledger.balances.keys().chain(self.balances.keys()).copied().collect();
        accounts.sort_by_key(|a| a.to_string());
        accounts.dedup();
        let mut mismatches = Vec::new();
        for account in accounts {
            let in_log = get(&self.balances, &account);
            let in_read_model = ledger.balances.get(&account).copied().unwrap_or(0);
            if in_log != in_read_model {
                mismatches.push(format!("{account}: {in_log} in the log, {in_read_model} in the read model"));
            }
        }
        let total: i128 = ledger.balances.values().map(|b| i128::from(*b)).sum();
        let name = ledger.name.clone();
        if total != 0 {
            self.fail("read_model", Some(position), None, format!("{name}: the trial balance sums to {total}"));
        }
        for mismatch in mismatches {
            self.fail("read_model", Some(position), None, format!("{name}: {mismatch}"));
        }
    }

    fn fail(&mut self, check: &'static str, position: Option<u64>, subject: Option<&str>, detail: String) {
        self.failures += 1;
        if self.findings.len() < FINDINGS_LISTED_MAX {
            self.findings.push(Finding { check, position, subject: subject.map(str::to_string), detail });
        }
    }

    fn total(&self) -> i128 {
        self.balances.values().map(|b| i128::from(*b)).sum()
    }

    /// Records the zero sum at every checkpoint at or before `position`.
    fn record_checkpoints(&mut self, position: u64) {
        self.compare_read_model(position);
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint).cloned() {
            if checkpoint.position > position {
                break;
            }
            self.next_checkpoint += 1;
            let total = self.total();
            let transit = get(&self.balances, &Account::TransitGifts);
            if total != 0 {
                self.fail(
                    "zero_sum",
                    Some(checkpoint.position),
                    None,
                    format!("balances sum to {total} at the checkpoint of {}", checkpoint.name),
                );
            }
            self.sums.push(CheckpointSum {
                name: checkpoint.name,
                position: checkpoint.position,
                total_coins: i64::try_from(total).unwrap_or(i64::MAX),
                transit_gifts_coins: transit,
            });
        }
    }

    /// Checks the next message of the log.
    pub fn observe(&mut self, position: u64, subject: &str, payload: &[u8]) {
        self.events += 1;
        if position != self.last_position + 1 {
            self.fail(
                "positions",
                Some(position),
                Some(subject),
                format!("follows position {}: the log has a gap", self.last_position),
            );
        }
        self.last_position = position;
        let envelope = match self.chains.check(position, subject, payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.fail("hash_chain", Some(position), Some(subject), error.fault.to_string());
                // Replay what the event says all the same, so that one bad
                // event is reported once (and what it changed, if anything
                // else breaks, by the checks below).
                match Envelope::decode(payload) {
                    Ok(envelope) => envelope,
                    Err(_) => {
                        self.record_checkpoints(position);
                        return;
                    }
                }
            }
        };
        if envelope.event.ledger_commit().is_some() {
            self.ledger_commit(position, subject, &envelope);
        } else {
            self.payment_event(position, subject, &envelope.event);
        }
        self.record_checkpoints(position);
    }

    /// A payment decision that moves coins awaits its posting (unless it
    /// was written with it, in one atomic batch: no posted position); a
    /// mark follows its posting.
    fn payment_event(&mut self, position: u64, subject: &str, event: &Event) {
        match event {
            Event::PaymentPurchaseCredited(e) if e.state_after.posted_position.is_some() => {
                if let Some(effect) = domain::payment::effect(event) {
                    self.unposted.insert(position, (e.payment_id.clone(), effect.coins, DecisionKind::Purchase));
                }
            }
            Event::PaymentRefundRecorded(e) if e.state_after.posted_position.is_some() => {
                if let Some(effect) = domain::payment::effect(event) {
                    self.unposted.insert(position, (e.payment_id.clone(), effect.coins, DecisionKind::Refund));
                }
            }
            // A resolution's credit is a purchase: a payment credited by
            // both is credited twice.
            Event::PaymentResolved(e) => {
                if let Some(effect) = domain::payment::effect(event) {
                    self.unposted.insert(position, (e.payment_id.clone(), effect.coins, DecisionKind::Purchase));
                }
            }
            Event::PaymentDisputeRecorded(e) => {
                if let Some(effect) = domain::payment::effect(event) {
                    let kind =
                        if e.coins > 0 { DecisionKind::DisputeWithdrawal } else { DecisionKind::DisputeReinstatement };
                    self.unposted.insert(position, (e.payment_id.clone(), effect.coins, kind));
                }
            }
            Event::PaymentPosted(e) if self.unposted.contains_key(&e.posted_position) => {
                let detail = format!("marks the decision at {} posted, which no commit posts", e.posted_position);
                self.fail("reconciliation", Some(position), Some(subject), detail);
            }
            _ => {}
        }
    }

    /// A commit posting a payment decision (one that names its source):
    /// the kind of the decision it posts, when it posts one.
    fn posting(
        &mut self,
        position: u64,
        subject: &str,
        payment_id: &str,
        coins: i64,
        source_position: u64,
    ) -> Option<DecisionKind> {
        if source_position == 0 {
            return None;
        }
        match self.unposted.remove(&source_position) {
            Some((decided_id, decided_coins, kind)) if decided_id == payment_id && decided_coins == coins => {
                return Some(kind);
            }
            Some((decided_id, decided_coins, _)) => self.fail(
                "reconciliation",
                Some(position),
                Some(subject),
                format!(
                    "posts {coins} coins of payment {payment_id} for the decision at {source_position}, \
                     which was of {decided_coins} coins of payment {decided_id}"
                ),
            ),
            None => self.fail(
                "reconciliation",
                Some(position),
                Some(subject),
                format!("posts the payment decision at {source_position}, which is unknown or already posted"),
            ),
        }
        None
    }

    fn ledger_commit(&mut self, position: u64, subject: &str, envelope: &Envelope) {
        let event = &envelope.event;
        let Some(commit) = event.ledger_commit() else { return };
        self.ledger_commits += 1;
        let user = match envelope.header.aggregate_id.parse::<Uuid>() {
            Ok(user) => user,
            Err(_) => {
                self.fail("constraints", Some(position), Some(subject), "a ledger whose id is not a user id".into());
                return;
            }
        };
        let previous = self.ledgers.remove(&user).unwrap_or_else(|| initial_state(user));
        if let Err(violation) = check_commit(&previous, event) {
            self.fail("constraints", Some(position), Some(subject), violation.to_string());
        }
        let after = &commit.state_after;
        let spends = match event {
            Event::GiftSent(_) => true,
            Event::LedgerAdjusted(e) => e.coins < 0,
            _ => false,
        };
        if spends && after.wallet_coins < 0 {
            self.fail(
                "constraints",
                Some(position),
                Some(subject),
                format!("the user's own spending left the wallet at {}", after.wallet_coins),
            );
        }
        for transfer in &commit.transfers {
            for (account, delta) in [(transfer.from, -transfer.amount_coins), (transfer.to, transfer.amount_coins)] {
                let balance = self.balances.entry(account).or_insert(0);
                match balance.checked_add(delta) {
                    Some(next) => *balance = next,
                    None => self.fail("zero_sum", Some(position), Some(subject), format!("{account} overflowed")),
                }
            }
        }
        if get(&self.balances, &Account::TransitGifts) < 0 {
            self.fail(
                "constraints",
                Some(position),
                Some(subject),
                format!("transit:gifts went negative: {}", get(&self.balances, &Account::TransitGifts)),
            );
        }
        match event {
            Event::GiftSent(e) => {
                self.gifts_sent += 1;
                self.uncredited.insert(position, e.coins);
            }
            Event::GiftsReceived(e) => {
                for gift in &e.gifts {
                    match self.uncredited.remove(&gift.source_position) {
                        Some(coins) if coins == gift.coins => self.gifts_credited += 1,
                        Some(coins) => self.fail(
                            "gifts",
                            Some(position),
                            Some(subject),
                            format!(
                                "credits {} coins for the gift at {}, which was of {coins}",
                                gift.coins, gift.source_position
                            ),
                        ),
                        None => self.fail(
                            "gifts",
                            Some(position),
                            Some(subject),
                            format!(
                                "credits the gift at {}, which is unknown or already credited",
                                gift.source_position
                            ),
                        ),
                    }
                }
            }
            Event::CoinsPurchased(e) => {
                let kind = self.posting(position, subject, &e.payment_id, e.coins, e.source_position);
                let payment = self.payments.entry(e.payment_id.clone()).or_default();
                let detail = if kind == Some(DecisionKind::DisputeReinstatement) {
                    payment.dispute_reinstated += e.coins;
                    (payment.dispute_reinstated > payment.dispute_withdrawn).then(|| {
                        format!(
                            "payment {}: {} coins reinstated, disputes withdrew {}",
                            e.payment_id, payment.dispute_reinstated, payment.dispute_withdrawn
                        )
                    })
                } else {
                    payment.purchased += e.coins;
                    payment.purchases += 1;
                    (payment.purchases > 1).then(|| format!("payment {} credited a second time", e.payment_id))
                };
                if let Some(detail) = detail {
                    self.fail("reconciliation", Some(position), Some(subject), detail);
                }
            }
            Event::PurchaseRefunded(e) => {
                let kind = self.posting(position, subject, &e.payment_id, e.coins, e.source_position);
                let payment = self.payments.entry(e.payment_id.clone()).or_default();
                if kind == Some(DecisionKind::DisputeWithdrawal) {
                    payment.dispute_withdrawn += e.coins;
                } else {
                    payment.refunded += e.coins;
                }
                if payment.reversed() > payment.credited() {
                    let detail = format!(
                        "payment {}: {} coins reversed (refunds and disputes), {} credited",
                        e.payment_id,
                        payment.reversed(),
                        payment.credited()
                    );
                    self.fail("reconciliation", Some(position), Some(subject), detail);
                }
            }
            _ => {}
        }
        self.ledgers.insert(user, LedgerState { user_id: user, snapshot: after.clone() });
    }

    /// The end of the log: the final checks and the report.
    pub fn finish(mut self, source: String, started: Instant) -> AuditReport {
        let read_model_position = self.read_model.as_ref().map(|l| l.position);
        self.record_checkpoints(u64::MAX);
        if let Some(ledger) = &self.read_model
            && !self.read_model_checked
        {
            let detail = format!(
                "{} is at position {}, beyond the log's end {}",
                ledger.name, ledger.position, self.last_position
            );
            self.fail("read_model", None, None, detail);
        }
        let total = self.total();
        if total != 0 {
            self.fail("zero_sum", Some(self.last_position), None, format!("balances sum to {total} at the end"));
        }
        let transit = get(&self.balances, &Account::TransitGifts);
        let uncredited: i64 = self.uncredited.values().sum();
        if transit != uncredited {
            self.fail(
                "gifts",
                None,
                None,
                format!("transit:gifts holds {transit} coins, the gifts not yet credited {uncredited}"),
            );
        }
        // Each user's balances from the transfers against the state the
        // last commit carries (and so, the hold against pending payouts).
        let mut users: Vec<_> = self.ledgers.values().cloned().collect();
        users.sort_by_key(|l| l.user_id);
        for ledger in &users {
            let user = ledger.user_id;
            let snap = &ledger.snapshot;
            for (account, carried) in [
                (Account::Wallet(user), snap.wallet_coins),
                (Account::Earnings(user), snap.earnings_coins),
                (Account::PayoutHold(user), snap.held_coins),
            ] {
                let from_transfers = get(&self.balances, &account);
                if from_transfers != carried {
                    self.fail(
                        "holds",
                        None,
                        Some(&events_schema::subject("ledger", &user.to_string())),
                        format!("{account}: {from_transfers} from the transfers, {carried} in the last commit"),
                    );
                }
            }
            let pending: i64 = snap.pending_payouts.iter().map(|p| p.coins).sum();
            let held = get(&self.balances, &Account::PayoutHold(user));
            if held != pending {
                self.fail(
                    "holds",
                    None,
                    Some(&events_schema::subject("ledger", &user.to_string())),
                    format!("payout_hold:{user} holds {held}, its pending payouts {pending}"),
                );
            }
        }
        let purchased: i64 = self.payments.values().map(|p| p.purchased).sum();
        let refunded: i64 = self.payments.values().map(|p| p.refunded).sum();
        let withdrawn: i64 = self.payments.values().map(|p| p.dispute_withdrawn).sum();
        let reinstated: i64 = self.payments.values().map(|p| p.dispute_reinstated).sum();
        let external = get(&self.balances, &Account::ExternalStripe);
        let net = purchased + reinstated - refunded - withdrawn;
        let stripe_balanced = external == -net;
        if !stripe_balanced {
            self.fail(
                "reconciliation",
                None,
                None,
                format!(
                    "external:stripe is {external}, the net of purchases, refunds and disputes {net} \
                     (purchased {purchased}, reinstated {reinstated}, refunded {refunded}, withdrawn {withdrawn})"
                ),
            );
        }
        let per_payment_ok = self.payments.values().all(Payment::consistent);
        let mut sums_by_name: BTreeMap<(u64, String), CheckpointSum> = BTreeMap::new();
        for sum in self.sums.drain(..) {
            sums_by_name.insert((sum.position, sum.name.clone()), sum);
        }
        AuditReport {
            source,
            events: self.events,
            subjects: self.chains.subjects(),
            last_position: self.last_position,
            ledger_commits: self.ledger_commits,
            users: self.ledgers.len() as u64,
            accounts: self.balances.len() as u64,
            total_coins_at_end: i64::try_from(total).unwrap_or(i64::MAX),
            transit_gifts_coins: transit,
            gifts_sent: self.gifts_sent,
            gifts_credited: self.gifts_credited,
            gifts_uncredited: self.uncredited.len() as u64,
            checkpoints: sums_by_name.into_values().collect(),
            read_model_compared_at: read_model_position.filter(|_| self.read_model_checked),
            reconciliation: Reconciliation {
                payments: self.payments.len() as u64,
                coins_purchased: purchased,
                coins_refunded: refunded,
                coins_dispute_withdrawn: withdrawn,
                coins_dispute_reinstated: reinstated,
                external_stripe_coins: external,
                decisions_unposted: self.unposted.len() as u64,
                balanced: stripe_balanced && per_payment_ok,
            },
            failures: self.failures,
            passed: self.failures == 0,
            findings: self.findings,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Audits the whole log of `log`.
pub async fn audit_log(
    log: &JetStreamLog,
    checkpoints: Vec<NamedCheckpoint>,
    read_model: Option<ReadModelLedger>,
    progress: &Progress,
) -> anyhow::Result<AuditReport> {
    let started = Instant::now();
    let end = log.last_position().await.context("reading the log's last position")?;
    progress.set_total(end);
    let mut auditor = Auditor::new(checkpoints.into_iter().filter(|c| c.position <= end).collect());
    if let Some(ledger) = read_model {
        auditor = auditor.with_read_model(ledger);
    }
    let mut messages = log.read_stream(1);
    // Bounded: the stream ends at the log's end as it was at the start.
    while let Some(message) = messages.next().await {
        let message = message.context("reading the log")?;
        auditor.observe(message.position, &message.subject, &message.payload);
        if message.position % 1_024 == 0 {
            progress.set(message.position);
        }
        if message.position >= end {
            break;
        }
    }
    progress.set(end);
    progress.finish();
    Ok(auditor.finish(format!("stream {}", log.stream_name()), started))
}

/// Audits an export file (no server needed).
pub async fn audit_file(path: &Path, progress: &Progress) -> anyhow::Result<AuditReport> {
    let started = Instant::now();
    let path = path.to_path_buf();
    let total = ArchiveReader::open(&path)?.header().last_position;
    progress.set_total(total);
    let source = format!("file {}", path.display());
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<u64>(16);
    let work = tokio::task::spawn_blocking(move || -> anyhow::Result<AuditReport> {
        let mut reader = ArchiveReader::open(&path)?;
        let mut auditor = Auditor::new(Vec::new());
        // Bounded by the file's length.
        loop {
            match reader.next_item()? {
                Item::Message(message) => {
                    auditor.observe(message.position, &message.subject, &message.payload);
                    if message.position % 1_024 == 0 {
                        let _ = sender.try_send(message.position);
                    }
                }
                Item::End(_) => return Ok(auditor.finish(source, started)),
            }
        }
    });
    while let Some(position) = receiver.recv().await {
        progress.set(position);
    }
    let report = work.await.map_err(|e| anyhow::anyhow!("audit thread: {e}"))??;
    progress.set(report.last_position);
    progress.finish();
    Ok(report)
}
