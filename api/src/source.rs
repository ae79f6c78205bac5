//! The projectors' log source over the event-log port: `projections` does
//! not depend on `commands`, so the process that runs both adapts one to the
//! other here.

use std::sync::Arc;

use commands::log::EventLog;
use futures_util::future::BoxFuture;
use projections::{LogMessage, LogSource, ProjectionError};

/// [`LogSource`] over any [`EventLog`] (the JetStream log in the service).
#[derive(Debug, Clone)]
pub struct EventLogSource {
    log: Arc<dyn EventLog>,
}

impl EventLogSource {
    pub fn new(log: Arc<dyn EventLog>) -> EventLogSource {
        EventLogSource { log }
    }
}

impl LogSource for EventLogSource {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        Box::pin(async move {
            let messages =
                self.log.read_from(position, max_messages).await.map_err(|e| ProjectionError::Source(e.to_string()))?;
            Ok(messages.into_iter().map(|m| LogMessage { position: m.position, payload: m.payload }).collect())
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(async move { self.log.last_position().await.map_err(|e| ProjectionError::Source(e.to_string())) })
    }
}
