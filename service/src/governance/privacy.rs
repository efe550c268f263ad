//! Differential privacy budgets (`veil.dp_budget`): what the caller, and
//! each dataset, spent in the current budget period. Everyone sees their
//! own ledger; owners, governors and auditors also see the dataset's and
//! every user's. Spending says who asked how much, never what was answered.

use serde_json::json;
use veil_proto::DpBudgetRequest;

use super::{Call, Governance, Outcome};
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::Permission;
use crate::model::policy::{DataRule, PolicyRule};
use crate::model::privacy::{DpSpent, shown, shown_left};
use crate::policy::differential_privacy::DpPolicy;
use crate::policy::effective::{applies_to, data_policy};

impl Governance {
    pub(super) async fn dp_budget(
        &self,
        call: &mut Call<'_>,
        req: DpBudgetRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let scope = call.scope;
        let snapshot = scope.snapshot();
        let issuer = self.engine.default_issuer();
        let datasets: Vec<&DatasetRecord> = if req.dataset.is_empty() {
            scope.readable_datasets()
        } else {
            vec![
                scope
                    .readable(&req.dataset)
                    .ok_or_else(|| VeilError::dataset_not_found(&req.dataset))?,
            ]
        };
        let oversees = p.has(Permission::Governance) || p.has(Permission::Audit);
        let me = format!(
            "user:{}",
            serde_json::to_string(&(&p.identity.issuer, &p.identity.subject)).unwrap_or_default()
        );
        let now = self.engine.dp_answers().now_ms();
        let store = self.engine.state().store();
        let mut out = Vec::new();
        for d in datasets {
            // The policy that applies to the caller, else any on the
            // dataset (an exempt owner still sees its budgets).
            let mine = data_policy(p, d, &snapshot.policies, issuer)
                .ok()
                .and_then(|e| e.dp);
            // Not under the policy (an exempt owner, a privileged reader):
            // their queries are answered exactly and charge nothing.
            let exempt = mine.is_none();
            let policy = match mine {
                Some(rule) => rule.policy,
                None => match snapshot
                    .policies
                    .iter()
                    .filter(|x| applies_to(x, d, issuer))
                    .find_map(|x| match &x.rule {
                        PolicyRule::Data(clauses) => clauses.iter().find_map(|c| match &c.rule {
                            Some(DataRule::DifferentialPrivacy(spec)) => {
                                DpPolicy::validate(spec).ok()
                            }
                            _ => None,
                        }),
                        PolicyRule::Subscription(_) => None,
                    }) {
                    Some(policy) => policy,
                    None => continue,
                },
            };
            let (period, period_ms) = match &policy.budgets {
                Some(b) => {
                    let ms = b.period_secs.max(1) * 1000;
                    (now.div_euclid(ms), Some(ms))
                }
                None => (0, None),
            };
            let ledgers = store.dp_ledgers(Some(&d.id), period).await?;
            let spent_of = |ledger: &str| {
                ledgers
                    .iter()
                    .filter(|r| r.ledger == ledger && r.period == period)
                    .sum::<DpSpent>()
            };
            let caps = policy.budgets.as_ref();
            let row = |who: serde_json::Value,
                       spent: DpSpent,
                       cap: Option<f64>,
                       cap_eps: Option<f64>,
                       delta_cap: Option<f64>| {
                json!({
                    "dataset": d.name,
                    "ledger": who,
                    "unit": policy.privacy.unit(),
                    "spent": shown(spent.value),
                    "budget": cap,
                    "budget_epsilon": cap_eps,
                    "remaining": cap.map(|c| shown_left(c, spent.value)),
                    "delta_spent": shown(spent.delta),
                    "delta_budget": delta_cap,
                    "delta_remaining": delta_cap.map(|c| shown_left(c, spent.delta)),
                    "period_started_at_ms": period_ms.map(|ms| period * ms),
                    "resets_at_ms": period_ms.map(|ms| (period + 1) * ms),
                    "exempt": false,
                    "query_epsilon": policy.epsilon,
                    "query_delta": policy.privacy.selection_delta(),
                })
            };
            // The dataset's spending moves with every fresh draw: shown to
            // a reader, it would tell whether someone else had asked a
            // question first.
            let overseer = oversees || d.is_owner(&p.identity);
            if overseer {
                out.push(row(
                    json!("dataset"),
                    spent_of("dataset"),
                    caps.and_then(|b| b.dataset),
                    caps.and_then(|b| b.dataset_epsilon),
                    caps.and_then(|b| b.dataset_delta),
                ));
            }
            let (user_cap, user_eps, user_delta) = (
                caps.and_then(|b| b.user),
                caps.and_then(|b| b.user_epsilon),
                caps.and_then(|b| b.user_delta),
            );
            let mut yours = row(json!("you"), spent_of(&me), user_cap, user_eps, user_delta);
            yours["exempt"] = json!(exempt);
            out.push(yours);
            if overseer {
                for r in ledgers.iter().filter(|r| {
                    r.period == period && r.ledger.starts_with("user:") && r.ledger != me
                }) {
                    let user: Option<(String, String)> =
                        serde_json::from_str(&r.ledger["user:".len()..]).ok();
                    let who = match user {
                        Some((issuer, subject)) => json!({"issuer": issuer, "subject": subject}),
                        None => json!(r.ledger),
                    };
                    out.push(row(who, r.spent, user_cap, user_eps, user_delta));
                }
            }
        }
        if out.is_empty() && !req.dataset.is_empty() {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is not under a differential privacy policy: it has no budget",
                req.dataset.chars().take(200).collect::<String>()
            )));
        }
        Ok(Outcome::Documents(out))
    }
}
