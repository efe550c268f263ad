//! Flight's `DoAction` and `ListActions` over the governance layer: parse
//! the action's name, decode its body into the typed request, run it
//! through [`Governance::run`] (which checks, audits and performs), encode
//! the typed outcome. No rule lives here.

mod decode;
mod encode;

use arrow_flight::{Action as FlightAction, ActionType};
use std::sync::Arc;
use tonic::Status;

use super::status::to_status;
use crate::engine::RequestScope;
use crate::governance::{Action, Governance};

/// The `DoAction` adapter.
#[derive(Debug)]
pub struct FlightActions {
    governance: Arc<Governance>,
}

impl FlightActions {
    pub fn new(governance: Arc<Governance>) -> Self {
        Self { governance }
    }

    /// Every action, with what it does (`ListActions`).
    pub fn catalog() -> Vec<ActionType> {
        Action::ALL
            .iter()
            .map(|a| ActionType {
                r#type: a.name().to_string(),
                description: a.description().to_string(),
            })
            .collect()
    }

    /// Run an action; returns the result bodies.
    pub async fn run(
        &self,
        scope: &Arc<RequestScope>,
        action: &FlightAction,
    ) -> std::result::Result<Vec<Vec<u8>>, Status> {
        let Some(kind) = Action::parse(&action.r#type) else {
            return Err(to_status(
                &self
                    .governance
                    .refuse_unknown(scope.principal(), &action.r#type)
                    .await,
            ));
        };
        self.governance
            .run(scope, kind, || decode::request(kind, &action.body))
            .await
            .map(encode::bodies)
            .map_err(|e| to_status(&e))
    }
}
