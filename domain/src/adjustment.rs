//! Four eyes on large adjustments: an adjustment of
//! `ADJUSTMENT_APPROVAL_COINS` or more coins either way is proposed by one
//! admin (its own aggregate, `hb.adjustment.<id>`) and applied only when a
//! different admin approves it: the approval and the `ledger.adjusted` that
//! applies it are one decision, appended in one atomic batch.
//!
//! Who may do what: nobody adjusts their own wallet, proposes an adjustment
//! of it, or approves an adjustment they proposed. Rejecting is open to any
//! admin but the adjusted user, the proposer included (withdrawing one's own
//! proposal moves nothing).

use events_schema::{AdjustmentApproved, AdjustmentProposed, AdjustmentRejected, Event};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ledger::{self, ADJUSTMENT_COINS_MAX, LedgerCommand, LedgerState, TEXT_CHARS_MAX, require_text};

/// Where a proposal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustmentStatus {
    Proposed,
    Applied,
    Rejected,
}

/// A proposed adjustment as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub adjustment_id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub reason: String,
    pub proposed_by: Uuid,
    pub status: AdjustmentStatus,
}

/// `None` before the proposal.
pub type AdjustmentState = Option<Adjustment>;

/// Whether an adjustment of `coins` needs a second admin: `threshold_coins`
/// or more either way (`ADJUSTMENT_APPROVAL_COINS`). A threshold of 0 puts
/// every adjustment through four eyes.
pub fn needs_approval(coins: i64, threshold_coins: i64) -> bool {
    coins.unsigned_abs() >= threshold_coins.max(0).unsigned_abs()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propose {
    pub adjustment_id: Uuid,
    pub user_id: Uuid,
    pub coins: i64,
    pub reason: String,
    pub admin_id: Uuid,
}

/// Proposes an adjustment. The same checks as a direct adjustment's that
/// do not depend on the wallet (a debit is checked against the wallet when
/// it is approved, as the wallet is then).
pub fn decide_propose(state: &AdjustmentState, command: &Propose) -> Result<Vec<Event>, DomainError> {
    if state.is_some() {
        return Err(DomainError::AdjustmentAlreadyExists);
    }
    if command.admin_id == command.user_id {
        return Err(DomainError::SelfApprovalForbidden);
    }
    require_text("reason", &command.reason, TEXT_CHARS_MAX)?;
    if command.coins == 0 {
        return Err(DomainError::Validation { field: "coins", reason: "an adjustment is not zero".into() });
    }
    if command.coins.unsigned_abs() > ADJUSTMENT_COINS_MAX.unsigned_abs() {
        return Err(DomainError::Validation {
            field: "coins",
            reason: format!("at most {ADJUSTMENT_COINS_MAX} either way"),
        });
    }
    Ok(vec![Event::AdjustmentProposed(AdjustmentProposed {
        adjustment_id: command.adjustment_id,
        user_id: command.user_id,
        coins: command.coins,
        reason: command.reason.clone(),
        proposed_by: command.admin_id,
    })])
}

/// Approves a proposal: `adjustment.approved` and the `ledger.adjusted`
/// that applies it, decided against the adjusted user's ledger.
pub fn decide_approve(
    state: &AdjustmentState,
    ledger_state: &LedgerState,
    approver_id: Uuid,
) -> Result<Vec<Event>, DomainError> {
    let proposal = open_proposal(state)?;
    if approver_id == proposal.proposed_by || approver_id == proposal.user_id {
        return Err(DomainError::SelfApprovalForbidden);
    }
    if ledger_state.user_id != proposal.user_id {
        return Err(DomainError::Validation { field: "userId", reason: "not the proposal's ledger".into() });
    }
    let adjust =
        LedgerCommand::Adjust { coins: proposal.coins, reason: proposal.reason.clone(), admin_id: approver_id };
    let mut events = ledger::decide(ledger_state, &adjust)?;
    events.push(Event::AdjustmentApproved(AdjustmentApproved {
        adjustment_id: proposal.adjustment_id,
        user_id: proposal.user_id,
        coins: proposal.coins,
        proposed_by: proposal.proposed_by,
        approved_by: approver_id,
    }));
    Ok(events)
}

/// Rejects a proposal: nothing moves.
pub fn decide_reject(state: &AdjustmentState, admin_id: Uuid, reason: &str) -> Result<Vec<Event>, DomainError> {
    let proposal = open_proposal(state)?;
    if admin_id == proposal.user_id {
        return Err(DomainError::SelfApprovalForbidden);
    }
    require_text("reason", reason, TEXT_CHARS_MAX)?;
    Ok(vec![Event::AdjustmentRejected(AdjustmentRejected {
        adjustment_id: proposal.adjustment_id,
        user_id: proposal.user_id,
        coins: proposal.coins,
        proposed_by: proposal.proposed_by,
        rejected_by: admin_id,
        reason: reason.to_owned(),
    })])
}

fn open_proposal(state: &AdjustmentState) -> Result<&Adjustment, DomainError> {
    let proposal = state.as_ref().ok_or(DomainError::AdjustmentNotFound)?;
    if proposal.status != AdjustmentStatus::Proposed {
        return Err(DomainError::AdjustmentNotProposed);
    }
    Ok(proposal)
}

/// Each event carries what the state needs after it, so that the aggregate
/// loads from its last event alone (as every aggregate here does). The
/// proposal's reason is not needed once it is settled.
pub fn evolve(state: AdjustmentState, event: &Event) -> AdjustmentState {
    let settled = |adjustment_id, user_id, coins, proposed_by, status| Adjustment {
        adjustment_id,
        user_id,
        coins,
        reason: state.as_ref().map(|a| a.reason.clone()).unwrap_or_default(),
        proposed_by,
        status,
    };
    match event {
        Event::AdjustmentProposed(e) => Some(Adjustment {
            adjustment_id: e.adjustment_id,
            user_id: e.user_id,
            coins: e.coins,
            reason: e.reason.clone(),
            proposed_by: e.proposed_by,
            status: AdjustmentStatus::Proposed,
        }),
        Event::AdjustmentApproved(e) => {
            Some(settled(e.adjustment_id, e.user_id, e.coins, e.proposed_by, AdjustmentStatus::Applied))
        }
        Event::AdjustmentRejected(e) => {
            Some(settled(e.adjustment_id, e.user_id, e.coins, e.proposed_by, AdjustmentStatus::Rejected))
        }
        _ => state,
    }
}
