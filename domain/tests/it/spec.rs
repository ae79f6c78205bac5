//! A small given/when/then harness for the deciders.

use chrono::{DateTime, TimeZone, Utc};
use domain::DomainError;
use domain::ledger::{self, LedgerCommand, LedgerState, PayoutPolicy};
use events_schema::{Account, Event, LedgerCommit, Money, Transfer};
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + secs, 0).single().expect("a valid time")
}

pub fn policy() -> PayoutPolicy {
    PayoutPolicy { rate_per_coin: Money { amount: Decimal::new(1, 2), currency: "usd".into() }, min_coins: 1000 }
}

/// A user's ledger, built from earlier decisions.
pub struct LedgerSpec {
    pub state: LedgerState,
}

pub fn ledger_of(user_id: Uuid) -> LedgerSpec {
    LedgerSpec { state: ledger::initial_state(user_id) }
}

impl LedgerSpec {
    /// Given the events of these accepted commands.
    pub fn given(mut self, commands: &[LedgerCommand]) -> LedgerSpec {
        for command in commands {
            let events = ledger::decide(&self.state, command).unwrap_or_else(|e| panic!("given {command:?}: {e}"));
            self = self.given_events(&events);
        }
        self
    }

    pub fn given_events(mut self, events: &[Event]) -> LedgerSpec {
        for event in events {
            ledger::check_commit(&self.state, event).expect("a given event keeps the invariants");
            self.state = ledger::evolve(self.state, event);
        }
        self
    }

    pub fn when(self, command: LedgerCommand) -> Outcome {
        let result = ledger::decide(&self.state, &command);
        Outcome { prev: self.state, result }
    }
}

/// What a decision gave.
pub struct Outcome {
    pub prev: LedgerState,
    pub result: Result<Vec<Event>, DomainError>,
}

impl Outcome {
    pub fn then_error(self, code: &str) {
        match self.result {
            Err(e) => assert_eq!(e.code(), code, "rejected with {e}"),
            Ok(events) => panic!("expected {code}, got {events:?}"),
        }
    }

    pub fn then_nothing(self) {
        assert_eq!(self.result, Ok(vec![]));
    }

    /// The single event, after checking the commit's invariants.
    pub fn then_event(self) -> Event {
        let events = self.result.unwrap_or_else(|e| panic!("rejected: {e}"));
        assert_eq!(events.len(), 1, "one commit per decision: {events:?}");
        let event = events.into_iter().next().expect("one event");
        ledger::check_commit(&self.prev, &event).expect("the commit keeps every invariant");
        event
    }
}

/// The transfers of a ledger event, as `(from, to, coins)`.
pub fn transfers(event: &Event) -> Vec<(Account, Account, i64)> {
    commit(event).transfers.iter().map(|Transfer { from, to, amount_coins }| (*from, *to, *amount_coins)).collect()
}

pub fn commit(event: &Event) -> &LedgerCommit {
    event.ledger_commit().expect("a ledger event")
}

/// `(wallet, earnings, held)` after the event.
pub fn balances(event: &Event) -> (i64, i64, i64) {
    let s = &commit(event).state_after;
    (s.wallet_coins, s.earnings_coins, s.held_coins)
}
