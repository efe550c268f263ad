//! Policy SQL: the `where` of row filters and the `mask_where` of
//! conditional masks.
//!
//! A policy's condition is parsed once, as one SQL expression over the
//! dataset's dictionary, in a session of its own where five *user functions*
//! exist: `user_name()`, `user_issuer()`, `user_in_group('g')`,
//! `user_attribute('k')` and `user_has_attribute('k', expr)`. Binding a
//! condition to a principal replaces each call with typed literals built from
//! the principal's identity, groups and attributes: values never pass through
//! SQL text, so no attribute value can change what the expression means.
//! The user functions exist only here; a user's query can't call them, and a
//! call that was not bound fails rather than evaluating.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast, lit,
};
use datafusion::prelude::SessionConfig;
use std::sync::{Arc, LazyLock};

use crate::error::{Result, VeilError};
use crate::model::identity::Principal;
use crate::sql::limits;

/// The user functions a policy condition may call.
pub const USER_FUNCTIONS: &[&str] = &[
    "user_name",
    "user_issuer",
    "user_in_group",
    "user_attribute",
    "user_has_attribute",
];

/// A user function as the parser sees it: typed, never executable.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UserFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
}

impl ScalarUDFImpl for UserFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        exec_err!(
            "{}() is only meaningful in a policy and was not bound to a user",
            self.name
        )
    }
}

fn user_function(name: &'static str, args: Vec<DataType>, returns: DataType) -> ScalarUDF {
    let signature = if args.is_empty() {
        Signature::nullary(Volatility::Immutable)
    } else if args.len() == 2 {
        // `user_has_attribute('k', expr)`: expr is any type.
        Signature::any(2, Volatility::Immutable)
    } else {
        Signature::exact(args, Volatility::Immutable)
    };
    ScalarUDF::new_from_impl(UserFunction {
        name,
        signature,
        returns,
    })
}

/// Parses and binds policy conditions.
#[derive(Debug)]
pub struct PolicySql {
    state: SessionState,
}

/// One parser for the process: building a session state is not free.
pub static POLICY_SQL: LazyLock<PolicySql> = LazyLock::new(PolicySql::new);

impl PolicySql {
    fn new() -> Self {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        // Conditions run on every read: their functions are bounded too.
        let _ = crate::sql::bounded::BoundedFunction::install(&mut state);
        for f in [
            user_function("user_name", vec![], DataType::Utf8),
            user_function("user_issuer", vec![], DataType::Utf8),
            user_function("user_in_group", vec![DataType::Utf8], DataType::Boolean),
            user_function("user_attribute", vec![DataType::Utf8], DataType::Utf8),
            user_function(
                "user_has_attribute",
                vec![DataType::Utf8, DataType::Utf8],
                DataType::Boolean,
            ),
        ] {
            // Registration only fails on a poisoned registry, which a fresh
            // state can't have.
            let _ = state.register_udf(Arc::new(f));
        }
        Self { state }
    }

    /// Parse `sql` as one boolean condition over `schema` (the dataset's
    /// dictionary). `what` names the condition in errors.
    pub fn parse(&self, sql: &str, schema: &Schema, what: &str) -> Result<Expr> {
        let bad = |m: String| VeilError::FailedPrecondition(format!("{what}: {m}"));
        limits::check_filter(sql).map_err(|e| bad(e.message().to_string()))?;
        let df_schema = DFSchema::try_from(schema.clone())
            .map_err(|e| VeilError::internal("dictionary schema", e))?;
        let expr = self
            .state
            .create_logical_expr(sql, &df_schema)
            .map_err(|e| {
                bad(format!(
                    "`{sql}` is not a SQL condition over the dataset's columns: {}",
                    crate::error::query::from_datafusion(e).message()
                ))
            })?;
        let mut problem = None;
        let _ = expr.apply(|e| {
            use datafusion::common::tree_node::TreeNodeRecursion;
            match e {
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => {
                    problem = Some("subqueries are not allowed: a policy condition reads only its own dataset's row".to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Expr::AggregateFunction(_) | Expr::WindowFunction(_) => {
                    problem = Some("aggregate and window functions are not allowed: a policy condition is evaluated row by row".to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Expr::Placeholder(_) | Expr::OuterReferenceColumn(..) => {
                    problem = Some("parameters are not allowed".to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Expr::ScalarFunction(f) if is_user_function(f) => {
                    let name = f.func.name();
                    let literal_key = matches!(
                        f.args.first(),
                        Some(Expr::Literal(ScalarValue::Utf8(Some(_)), _))
                    );
                    if matches!(name, "user_in_group" | "user_attribute" | "user_has_attribute")
                        && !literal_key
                    {
                        problem = Some(format!(
                            "{name}() takes a quoted name as its first argument, as in {name}('region')"
                        ));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if let Some(p) = problem {
            return Err(bad(p));
        }
        match expr.get_type(&df_schema) {
            Ok(DataType::Boolean) => Ok(expr),
            Ok(other) => Err(bad(format!(
                "`{sql}` is of type {other}; a condition must be true or false"
            ))),
            Err(e) => Err(bad(format!(
                "`{sql}` does not type-check: {}",
                crate::error::query::from_datafusion(e).message()
            ))),
        }
    }

    /// Replace the user functions in a parsed condition with the principal's
    /// values, as typed literals. Fails (the policy can't be evaluated for
    /// this principal, so nothing is served) where a value is ambiguous.
    pub fn bind(&self, expr: &Expr, p: &Principal, what: &str) -> Result<Expr> {
        let mut failure: Option<VeilError> = None;
        let bound = expr
            .clone()
            .transform_up(|e| {
                let Expr::ScalarFunction(f) = &e else {
                    return Ok(Transformed::no(e));
                };
                if !is_user_function(f) {
                    return Ok(Transformed::no(e));
                }
                let key = match f.args.first() {
                    Some(Expr::Literal(ScalarValue::Utf8(Some(k)), _)) => Some(k.clone()),
                    _ => None,
                };
                let replacement = match (f.func.name(), key) {
                    ("user_name", _) => lit(p.identity.subject.clone()),
                    ("user_issuer", _) => lit(p.identity.issuer.clone()),
                    ("user_in_group", Some(g)) => lit(p.in_group(&g)),
                    ("user_attribute", Some(k)) => match p.attribute(&k) {
                        None => Expr::Literal(ScalarValue::Utf8(None), None),
                        Some(vs) if vs.is_empty() => Expr::Literal(ScalarValue::Utf8(None), None),
                        Some(vs) if vs.len() == 1 => {
                            lit(vs.iter().next().cloned().unwrap_or_default())
                        }
                        Some(_) => {
                            failure = Some(VeilError::PermissionDenied(format!(
                                "{what} uses user_attribute('{k}'), but you hold several values of '{k}', so the policy can't be evaluated for you and no data is served; the policy's author can use user_has_attribute('{k}', column) instead"
                            )));
                            lit(false)
                        }
                    },
                    ("user_has_attribute", Some(k)) => {
                        let values: Vec<Expr> = p
                            .attribute(&k)
                            .map(|vs| vs.iter().map(|v| lit(v.clone())).collect())
                            .unwrap_or_default();
                        match (values.is_empty(), f.args.get(1)) {
                            (true, _) => lit(false),
                            (false, Some(arg)) => {
                                cast(arg.clone(), DataType::Utf8).in_list(values, false)
                            }
                            (false, None) => lit(false),
                        }
                    }
                    (name, _) => {
                        failure = Some(VeilError::FailedPrecondition(format!(
                            "{what}: {name}() is not used as documented"
                        )));
                        lit(false)
                    }
                };
                Ok(Transformed::yes(replacement))
            })
            .map_err(|e| VeilError::internal("binding a policy condition", e))?
            .data;
        if let Some(f) = failure {
            return Err(f);
        }
        Ok(bound)
    }
}

fn is_user_function(f: &ScalarFunction) -> bool {
    f.func.inner().is::<UserFunction>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::identity::{Attributes, ClientInfo, Identity};
    use datafusion::arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("state", DataType::Utf8, true),
            Field::new("passenger_count", DataType::Int64, true),
        ])
    }

    fn who(groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.entry(k.to_string()).or_default().insert(v.to_string());
        }
        Principal {
            identity: Identity::new("iss", "o'brien"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: a,
            permissions: Default::default(),
            // Built by hand: fingerprints belong to `auth`, above this layer.
            fingerprint: [1; 32],
            client: ClientInfo::default(),
        }
    }

    #[test]
    fn user_values_enter_as_literals() {
        let sql = &*POLICY_SQL;
        let e = sql
            .parse(
                "state = user_attribute('home') OR user_in_group('admins') OR user_name() = 'x'",
                &schema(),
                "p",
            )
            .unwrap();
        let b = sql
            .bind(&e, &who(&[], &[("home", "CA' OR '1'='1")]), "p")
            .unwrap();
        let text = b.to_string();
        // The hostile value is one string literal, not SQL.
        assert!(text.contains("Utf8(\"CA' OR '1'='1\")"), "{text}");
        assert!(text.contains("Boolean(false)"), "{text}");
        assert!(text.contains("Utf8(\"o'brien\")"), "{text}");
        assert!(!text.contains("user_"), "{text}");
    }

    #[test]
    fn ambiguous_attributes_deny() {
        let sql = &*POLICY_SQL;
        let e = sql
            .parse("state = user_attribute('home')", &schema(), "p")
            .unwrap();
        let many = who(&[], &[("home", "CA"), ("home", "NY")]);
        assert!(matches!(
            sql.bind(&e, &many, "p"),
            Err(VeilError::PermissionDenied(_))
        ));
        let e = sql
            .parse("user_has_attribute('home', state)", &schema(), "p")
            .unwrap();
        let b = sql.bind(&e, &many, "p").unwrap().to_string();
        assert!(b.contains("IN"), "{b}");
        let none = sql.bind(&e, &who(&[], &[]), "p").unwrap();
        assert_eq!(none, lit(false));
    }

    #[test]
    fn conditions_must_be_row_level_booleans_over_the_dataset() {
        let sql = &*POLICY_SQL;
        for bad in [
            "passenger_count + 1",
            "missing_column = 1",
            "passenger_count IN (SELECT 1)",
            "count(*) > 1",
            "user_attribute(state) = 'x'",
            "1 = ",
        ] {
            assert!(
                matches!(
                    sql.parse(bad, &schema(), "p"),
                    Err(VeilError::FailedPrecondition(_))
                ),
                "{bad}"
            );
        }
        assert!(sql.parse("passenger_count < 2", &schema(), "p").is_ok());
    }
}
