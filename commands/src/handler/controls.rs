//! Money-out controls: settling a payout found from the log (its reference,
//! written with the request), and four eyes on large adjustments. No
//! command here reads a read model: whose ledger a payout or a proposal
//! touches comes from the log, from a subject that never changes owner
//! once written.

use domain::DomainError;
use domain::adjustment::{self, Propose};
use domain::ledger::{self, LedgerCommand};
use domain::user;
use uuid::Uuid;

use super::{CommandContext, CommandError, Commands, Outcome};
use crate::subjects::{adjustment_subject, ledger_subject, payout_reference_subject};

impl Commands {
    /// The owner of a payout, from the log's reference to it (`None`: no
    /// payout with this id was requested since payouts carry one).
    pub async fn payout_owner(&self, payout_id: Uuid) -> Result<Option<Uuid>, CommandError> {
        let subject = payout_reference_subject(payout_id);
        let lasts = self.load(std::slice::from_ref(&subject)).await?;
        Ok(lasts.state(&subject, None, user::evolve_reservation))
    }

    /// Approves or rejects a payout (`command` is `ApprovePayout` or
    /// `RejectPayout`) as `admin_id`. The ledger is found from the log's
    /// reference; `owner_hint` serves only payouts requested before payouts
    /// carried one, and the decision comes from the hinted ledger in the
    /// log all the same (a wrong hint finds no such pending payout).
    pub async fn settle_payout(
        &self,
        ctx: &CommandContext,
        admin_id: Uuid,
        payout_id: Uuid,
        owner_hint: Option<Uuid>,
        command: LedgerCommand,
    ) -> Result<Outcome, CommandError> {
        let owner = match self.payout_owner(payout_id).await? {
            Some(owner) => owner,
            None => owner_hint.ok_or(DomainError::PayoutNotFound)?,
        };
        let ledger_subject = ledger_subject(owner);
        self.execute_with(Some(ctx), &ctx.actor, vec![ledger_subject.clone()], Some(&ledger_subject), |lasts| {
            ledger::decide_settlement(
                &lasts.state(&ledger_subject, ledger::initial_state(owner), ledger::evolve),
                admin_id,
                &command,
            )
        })
        .await
    }

    /// Proposes an adjustment that needs a second admin.
    pub async fn propose_adjustment(&self, ctx: &CommandContext, command: Propose) -> Result<Outcome, CommandError> {
        let subject = adjustment_subject(command.adjustment_id);
        self.execute(Some(ctx), &ctx.actor, vec![subject.clone()], |lasts| {
            adjustment::decide_propose(&lasts.state(&subject, None, adjustment::evolve), &command)
        })
        .await
    }

    /// Approves a proposed adjustment: the approval and the ledger's
    /// adjustment in one atomic batch. The adjusted user comes from the
    /// proposal in the log (it never changes once proposed).
    pub async fn approve_adjustment(
        &self,
        ctx: &CommandContext,
        adjustment_id: Uuid,
        approver_id: Uuid,
    ) -> Result<Outcome, CommandError> {
        let subject = adjustment_subject(adjustment_id);
        let user_id = self.adjustment_user(&subject).await?;
        let ledger_subject = ledger_subject(user_id);
        let subjects = vec![subject.clone(), ledger_subject.clone()];
        self.execute(Some(ctx), &ctx.actor, subjects, |lasts| {
            adjustment::decide_approve(
                &lasts.state(&subject, None, adjustment::evolve),
                &lasts.state(&ledger_subject, ledger::initial_state(user_id), ledger::evolve),
                approver_id,
            )
        })
        .await
    }

    /// Rejects a proposed adjustment: nothing moves.
    pub async fn reject_adjustment(
        &self,
        ctx: &CommandContext,
        adjustment_id: Uuid,
        admin_id: Uuid,
        reason: String,
    ) -> Result<Outcome, CommandError> {
        let subject = adjustment_subject(adjustment_id);
        self.execute(Some(ctx), &ctx.actor, vec![subject.clone()], |lasts| {
            adjustment::decide_reject(&lasts.state(&subject, None, adjustment::evolve), admin_id, &reason)
        })
        .await
    }

    async fn adjustment_user(&self, subject: &str) -> Result<Uuid, CommandError> {
        let lasts = self.load(&[subject.to_owned()]).await?;
        let proposal = lasts.state(subject, None, adjustment::evolve).ok_or(DomainError::AdjustmentNotFound)?;
        Ok(proposal.user_id)
    }
}
