//! The SQL a database dataset's reads send, for each kind of policy and
//! user query: policy row filters go into the statement; a user's filter
//! goes in only where it names unmasked columns of a dataset that neither
//! k-anonymizes nor samples, and only in a shape the database evaluates
//! exactly as DataFusion does; a limit goes in only where no filter stays
//! behind. Planning opens no connection, so these need no database.
//!
//! Review a changed statement with `cargo insta review` (or rerun with
//! `INSTA_UPDATE=always`) and read the diff before committing it.

use super::tests::{demo_engine_seeded, principal};
use super::*;
use crate::catalog::database::table::DatabaseScanExec;
use crate::model::Origin;
use crate::model::dataset::{
    ColumnRecord, DatabaseEngine, DatabaseRelation, DatabaseSource, FileFormatKind, SourceSpec,
};
use crate::model::identity::Identity;

const EXTRA: &str = r#"
[[connections]]
name = "crm"
kind = "postgres"
user = "veil"
database = "crm"

[[connections]]
name = "shop"
kind = "mysql"
user = "veil"
database = "shop"

[[policies]]
name = "shop-people-of-my-state"
dataset = "shop.people"
row_filter = { column = "state", attribute = "state" }
except = { groups = ["privileged", "all-rows"] }

[[policies]]
name = "people-for-analysts"
tags = ["crm"]
subscription = { groups = ["analysts"] }

[[policies]]
name = "people-of-my-state"
dataset = "crm.people"
row_filter = { column = "state", attribute = "state" }
except = { groups = ["privileged", "all-rows"] }

[[policies]]
name = "people-recent"
dataset = "crm.people"
row_filter = { within = "30 days" }
except = { groups = ["privileged", "all-rows"] }

[[policies]]
name = "sampled"
dataset = "crm.sampled"
row_filter = { sample = 10, column = "id" }
except = { groups = ["privileged"] }

# No row policy for rowan, masks as alice's.
[[users]]
name = "rowan"
groups = ["analysts", "all-rows"]
"#;

/// Added at run time, past the config's check of the column's cardinality
/// (which would read the database).
const KANON: &str = r#"
name = "k-anonymous-states"
dataset = "crm.kanon"
columns = ["state"]
mask = { k_anonymity = { k = 2 } }
except = { groups = ["privileged"] }
"#;

pub(crate) fn people(name: &str, engine: DatabaseEngine) -> DatasetRecord {
    let col = |n: &str, t: &str, tags: &[&str]| ColumnRecord {
        name: n.into(),
        data_type: t.into(),
        nullable: true,
        description: String::new(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        partition: false,
        from_config: false,
    };
    let columns = vec![
        col("id", "Int64", &[]),
        col("name", "Utf8", &["PII.name"]),
        col("email", "Utf8", &["PII.email"]),
        col("state", "Utf8", &[]),
        col("age", "Int32", &[]),
        col("amount", "Decimal128(10, 2)", &[]),
        col("joined", "Timestamp(µs, \"UTC\")", &[]),
        col("uid", "Utf8", &[]),
    ];
    let types = match engine {
        DatabaseEngine::Postgres => [
            ("id", "bigint"),
            ("name", "text"),
            ("email", "character varying(100)"),
            ("state", "text"),
            ("age", "integer"),
            ("amount", "numeric(10,2)"),
            ("joined", "timestamp with time zone"),
            ("uid", "uuid"),
        ],
        DatabaseEngine::Mysql => [
            ("id", "bigint(20)"),
            ("name", "varchar(40)"),
            ("email", "varchar(100)"),
            ("state", "char(2)"),
            ("age", "int(11)"),
            ("amount", "decimal(10,2)"),
            ("joined", "timestamp(6)"),
            ("uid", "uuid"),
        ],
    };
    let connection = match engine {
        DatabaseEngine::Postgres => "crm",
        DatabaseEngine::Mysql => "shop",
    };
    DatasetRecord {
        id: format!("id-{name}"),
        name: name.into(),
        source: SourceSpec {
            format: FileFormatKind::Parquet,
            location: format!("db://{connection}/public.{name}"),
            hive_partitioned: false,
            database: Some(DatabaseSource {
                engine,
                connection: connection.into(),
                relation: DatabaseRelation::Table {
                    schema: "public".into(),
                    name: name.split_once('.').unwrap().1.into(),
                },
                primary_key: vec!["id".into()],
                partition_column: None,
                acceleration: None,
                column_types: types
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string()))
                    .collect(),
            }),
        },
        description: String::new(),
        owners: vec![Identity::new("veil-demo", "dave")],
        experts: vec![],
        tags: vec!["crm".into()],
        columns,
        origin: Origin::Runtime,
        event_time: Some("joined".into()),
        tag_proposals: vec![],
    }
}

/// The statements `user`'s `sql` sends (one per database scan in its plan),
/// with the request's clock replaced by `[now]`.
async fn statement(user: &str, sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = ["crm.people", "crm.sampled", "crm.kanon"]
        .map(|n| people(n, DatabaseEngine::Postgres))
        .to_vec();
    seed.push(people("shop.people", DatabaseEngine::Mysql));
    let (engine, _) = demo_engine_seeded(dir.path(), EXTRA, seed).await;
    let engine = Arc::new(engine);
    let kanon: crate::model::policy::PolicySpec = toml::from_str(KANON).unwrap();
    engine
        .state()
        .store()
        .put_policy(&kanon, crate::store::PolicyPut::Create)
        .await
        .unwrap();
    let snap = engine.state().current().await.unwrap();
    let scope = engine.scope(&principal(&snap, user)).await.unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let q = engine
        .plan(
            &scope,
            &Command::Sql(SqlCommand {
                query: sql.into(),
                ..Default::default()
            }),
            None,
            Some(now),
        )
        .await
        .unwrap();
    let mut found = vec![];
    collect(&q.physical, &mut found);
    assert!(!found.is_empty(), "a database scan in {sql}");
    format!("-- {user}: {sql}\n{}", found.join("\n"))
}

fn collect(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(scan) = plan.downcast_ref::<DatabaseScanExec>() {
        out.push(scan.statement().to_string());
    }
    for c in plan.children() {
        collect(c, out);
    }
}

#[tokio::test]
async fn policy_row_filters_go_into_the_statement() {
    insta::assert_snapshot!(statement("alice", "SELECT id, state FROM crm.people").await);
}

#[tokio::test]
async fn an_unrestricted_reader_gets_a_plain_statement_with_its_limit() {
    insta::assert_snapshot!(statement("bob", "SELECT id, name FROM crm.people LIMIT 5").await);
}

#[tokio::test]
async fn user_filters_on_unmasked_columns_go_in_and_masked_ones_never() {
    insta::assert_snapshot!(
        statement(
            "rowan",
            "SELECT id FROM crm.people WHERE age >= 30 AND uid = 'x' AND name = 'Ana Garcia' \
             AND email LIKE '%@example.com' AND amount > 10.5"
        )
        .await
    );
}

/// Under a row policy the database returns the rows the policy selects,
/// whatever the reader's filter: it never chooses which rows beyond the
/// reader's own reach the database (where one could fail the read or take
/// time). Likewise on MySQL, whose policy match is loose.
#[tokio::test]
async fn nothing_of_the_readers_is_pushed_under_a_row_policy() {
    for (dataset, filter) in [
        ("crm.people", "age >= 30 AND uid = 'x' AND amount > 10.5"),
        ("shop.people", "age >= 30 AND amount = 5"),
    ] {
        let sql = statement("alice", &format!("SELECT id FROM {dataset} WHERE {filter}")).await;
        let pushed = sql.lines().last().unwrap().split(" WHERE ").nth(1).unwrap();
        assert!(!pushed.contains("age"), "{pushed}");
        assert!(
            pushed.contains("state"),
            "the policy's filter goes in: {pushed}"
        );
    }
}

#[tokio::test]
async fn filters_that_could_fail_or_differ_stay_in_datafusion() {
    insta::assert_snapshot!(
        statement(
            "bob",
            "SELECT id FROM crm.people WHERE 100 / (age - 30) > 1 AND state > 'M' \
             AND lower(name) = 'ana' AND (age < 20 OR name = 'x')"
        )
        .await
    );
}

#[tokio::test]
async fn a_limit_stays_above_a_filter() {
    insta::assert_snapshot!(
        statement("bob", "SELECT id FROM crm.people WHERE age = 40 LIMIT 3").await
    );
}

#[tokio::test]
async fn nothing_is_pushed_below_a_sample() {
    insta::assert_snapshot!(statement("alice", "SELECT id FROM crm.sampled WHERE age = 40").await);
}

#[tokio::test]
async fn nothing_is_pushed_below_k_anonymization() {
    insta::assert_snapshot!(statement("alice", "SELECT state FROM crm.kanon WHERE age = 40").await);
}

#[tokio::test]
async fn aggregates_read_only_the_columns_they_need() {
    insta::assert_snapshot!(
        statement("bob", "SELECT count(*) FROM crm.people WHERE age > 60").await
    );
}

/// MySQL: backticks; strings compare under a collation, so only positive
/// equality and LIKE go in (never `<>`, `NOT LIKE`, or LIKE with a
/// backslash); a uuid read as its text.
#[tokio::test]
async fn mysql_renders_only_what_its_collations_can_only_widen() {
    insta::assert_snapshot!(
        statement(
            "rowan",
            "SELECT id FROM shop.people WHERE age >= 30 AND uid = 'x' AND state <> 'NY' \
             AND uid LIKE 'a%' AND uid NOT LIKE 'b%' AND uid LIKE 'c\\%' AND amount = 5"
        )
        .await
    );
}
