//! Which token claims Veil believes: two issuers, the demo's (trusted for
//! nothing, the default) and `idp2` (trusted for groups, under the prefix
//! `idp2:`). A validly signed token from the untrusted issuer claiming
//! `privileged` is exempted from nothing and subscribed to nothing; the
//! trusted issuer's groups arrive prefixed. Explain shows where each group
//! came from and what was ignored; a reload applies new trust.

use serde_json::Value;
use tonic::Code;
use veil::auth::jwt::TokenMinter;
use veil::config::Config;
use veil::model::identity::Attributes;
use veil_client::{Connection, Scan};
use veil_proto::{AttributeValues, ExplainRequest, UserRef};
use veil_tests::{TestServer, strings};

const DEMO_KEY: &str = "secret_file = \"jwt.secret\"\n";

/// The second issuer's key and trust, and a policy that exempts one of its
/// (prefixed) groups.
const IDP2: &str = r#"
[[auth.keys]]
issuer = "idp2"
algorithm = "HS256"
secret_file = "idp2.secret"

[[auth.issuers]]
issuer = "idp2"
trust_claims = "groups"
group_prefix = "idp2:"
"#;

const SITE_POLICY: &str = r#"
[[policies]]
name = "site-names-for-idp2-site-admins"
dataset = "clinical.sites"
columns = ["site"]
mask = "hash"
except = { groups = ["idp2:site-admins"] }
"#;

async fn server() -> TestServer {
    TestServer::demo_with(|dir| {
        std::fs::write(
            dir.join("idp2.secret"),
            "another-32-byte-secret-for-idp2-0123456789",
        )
        .unwrap();
        let config = dir.join("veil.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(DEMO_KEY));
        let text = text.replacen(DEMO_KEY, &format!("{DEMO_KEY}{IDP2}"), 1);
        std::fs::write(&config, format!("{text}{SITE_POLICY}")).unwrap();
    })
    .await
}

/// Mints tokens of `idp2`.
fn idp2_minter(server: &TestServer) -> TokenMinter {
    let cfg = Config::load(&server.config_path).unwrap();
    let mut auth = cfg.auth.clone();
    auth.keys.retain(|k| k.issuer == "idp2");
    TokenMinter::from_config(&auth, &cfg.base_dir).unwrap()
}

async fn connect(
    server: &TestServer,
    minter: &TokenMinter,
    user: &str,
    groups: &[&str],
    attrs: &[(&str, &str)],
) -> Connection {
    let mut a = Attributes::new();
    for (k, v) in attrs {
        a.entry(k.to_string()).or_default().insert(v.to_string());
    }
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let token = minter.mint(user, &groups, &a, 600).unwrap();
    server.connect_token(&token).await
}

async fn column(c: &Connection, dataset: &str, column: &str) -> Vec<String> {
    let out = c
        .scan(dataset, Scan::default().with_columns(&[column]))
        .await
        .unwrap();
    strings(&out, column).into_iter().flatten().collect()
}

fn is_hash(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn an_untrusted_issuer_claiming_privileged_gets_nothing_more() {
    let server = server().await;
    // carol (marketing) is not subscribed to clinical.trials; her token
    // claims the groups that would subscribe and exempt her.
    let carol = server
        .connect_token(&server.token_with("carol", &["analysts", "privileged"], &[("state", "CA")]))
        .await;
    let me = carol.whoami().await.unwrap();
    assert_eq!(me.groups, vec!["marketing".to_string()]);
    assert!(me.attributes.is_empty(), "{me:?}");
    assert!(
        !carol
            .list_datasets()
            .await
            .unwrap()
            .contains(&"clinical.trials".to_string())
    );
    let e = carol
        .scan("clinical.trials", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");

    // alice is subscribed; claiming `privileged` and another state changes
    // neither her masks nor her rows.
    let alice = server
        .connect_token(&server.token_with("alice", &["privileged"], &[("state", "NY")]))
        .await;
    let ssns = column(&alice, "clinical.trials", "ssn").await;
    assert!(!ssns.is_empty() && ssns.iter().all(|s| is_hash(s)));
    let states = column(&alice, "clinical.trials", "state").await;
    assert!(states.iter().all(|s| s == "CA"), "only her directory state");

    // The trusted issuer's name for a group doesn't help either.
    let alice = server
        .connect_token(&server.token_with("alice", &["idp2:site-admins"], &[]))
        .await;
    let sites = column(&alice, "clinical.sites", "site").await;
    assert!(!sites.is_empty() && sites.iter().all(|s| is_hash(s)));
}

#[tokio::test]
async fn a_trusted_issuer_groups_arrive_under_its_prefix() {
    let server = server().await;
    let idp2 = idp2_minter(&server);
    let zoe = connect(
        &server,
        &idp2,
        "zoe",
        &["site-admins", "analysts", "privileged"],
        &[("state", "CA")],
    )
    .await;
    let me = zoe.whoami().await.unwrap();
    assert_eq!(me.issuer, "idp2");
    assert_eq!(
        me.groups,
        vec!["idp2:analysts", "idp2:privileged", "idp2:site-admins"]
    );
    assert!(me.attributes.is_empty(), "idp2 is trusted for groups only");
    // Its `analysts` is not the directory's: no subscription to trials.
    assert!(
        !zoe.list_datasets()
            .await
            .unwrap()
            .contains(&"clinical.trials".to_string())
    );
    // Its `site-admins` is the group the policy names.
    let sites = column(&zoe, "clinical.sites", "site").await;
    assert!(
        !sites.is_empty() && sites.iter().all(|s| s.ends_with("University Hospital")),
        "{sites:?}"
    );
    // Without the group, the mask applies.
    let yan = connect(&server, &idp2, "yan", &["privileged"], &[]).await;
    let sites = column(&yan, "clinical.sites", "site").await;
    assert!(sites.iter().all(|s| is_hash(s)));
}

fn user(issuer: &str, subject: &str) -> Option<UserRef> {
    Some(UserRef {
        issuer: issuer.into(),
        subject: subject.into(),
    })
}

async fn explain(dave: &Connection, request: ExplainRequest) -> Value {
    let text = dave.explain(request).await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn explain_shows_where_each_group_came_from_and_what_is_ignored() {
    let server = server().await;
    let dave = server.connect("dave").await;
    let e = explain(
        &dave,
        ExplainRequest {
            user: user("", "alice"),
            dataset: "clinical.trials".into(),
            groups: vec!["privileged".into()],
            attributes: vec![AttributeValues {
                key: "state".into(),
                values: vec!["NY".into()],
            }],
        },
    )
    .await;
    assert_eq!(e["groups"], serde_json::json!(["analysts"]), "{e}");
    assert_eq!(
        e["sources"]["groups"]["analysts"],
        serde_json::json!(["directory"])
    );
    assert_eq!(
        e["sources"]["attributes"]["state"]["CA"],
        serde_json::json!(["directory"])
    );
    assert_eq!(e["token_trust"]["issuer"], "veil-demo");
    assert_eq!(e["token_trust"]["trust_claims"], "none");
    assert_eq!(
        e["ignored_claims"]["groups"],
        serde_json::json!(["privileged"])
    );
    assert_eq!(
        e["ignored_claims"]["attributes"]["state"],
        serde_json::json!(["NY"])
    );
    assert_eq!(
        e["masks"]["ssn"], "hash",
        "the ignored group exempts nothing"
    );

    let e = explain(
        &dave,
        ExplainRequest {
            user: user("idp2", "zoe"),
            dataset: "clinical.sites".into(),
            groups: vec!["site-admins".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        e["sources"]["groups"]["idp2:site-admins"],
        serde_json::json!(["explain --group/--attr (as a token from issuer idp2)"]),
        "{e}"
    );
    assert_eq!(e["token_trust"]["trust_claims"], "groups");
    assert_eq!(e["token_trust"]["group_prefix"], "idp2:");
    assert!(e["masks"].get("site").is_none(), "{e}");
}

#[tokio::test]
async fn a_reload_applies_new_trust_and_refuses_unknown_levels() {
    let server = server().await;
    let dave = server.connect("dave").await;
    let alice = server
        .connect_token(&server.token_with("alice", &["privileged"], &[]))
        .await;
    assert!(
        column(&alice, "clinical.trials", "ssn")
            .await
            .iter()
            .all(|s| is_hash(s))
    );

    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let trusting = |level: &str| {
        text.replacen(
            IDP2,
            &format!(
                "{IDP2}\n[[auth.issuers]]\nissuer = \"veil-demo\"\ntrust_claims = \"{level}\"\n"
            ),
            1,
        )
    };
    std::fs::write(&server.config_path, trusting("groups")).unwrap();
    let report = dave.reload().await.unwrap();
    // Said, and audited, as what changed.
    assert!(
        report.contains("issuers' claim trust changed: veil-demo")
            && !report.contains("nothing changed"),
        "{report}"
    );
    let events = dave.audit_tail(5).await.unwrap();
    let reload = events
        .iter()
        .rev()
        .find(|e| e.contains("config.reload"))
        .expect("the reload is audited");
    assert!(
        reload.contains("issuers' claim trust changed: veil-demo"),
        "{reload}"
    );
    // The same token, now believed.
    let ssns = column(&alice, "clinical.trials", "ssn").await;
    assert!(ssns.iter().all(|s| s.len() == 11), "raw for privileged");

    std::fs::write(&server.config_path, trusting("everything")).unwrap();
    let e = dave.reload().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert!(e.to_string().contains("groups_and_attributes"), "{e}");
    // Nothing changed.
    let ssns = column(&alice, "clinical.trials", "ssn").await;
    assert!(ssns.iter().all(|s| s.len() == 11));
}

#[test]
fn veil_token_warns_that_untrusted_claims_will_be_ignored() {
    let dir = tempfile::tempdir().unwrap();
    veil::demo::prepare(dir.path()).unwrap();
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["token", "--data-dir"])
        .arg(dir.path())
        .args([
            "--user",
            "alice",
            "--group",
            "privileged",
            "--attr",
            "state=NY",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // stdout is the token alone, so `VEIL_TOKEN=$(veil token ...)` works.
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("ignores this token's --group claims")
            && stderr.contains("ignores this token's --attr claims")
            && stderr.contains("[[auth.issuers]]"),
        "{stderr}"
    );
    // Without claims, nothing to warn about.
    assert_eq!(token_stderr(dir.path(), "alice"), "");
}

/// `veil token --user <name>`'s stderr, for the demo in `dir`.
fn token_stderr(dir: &std::path::Path, user: &str) -> String {
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["token", "--data-dir"])
        .arg(dir)
        .args(["--user", user])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test]
async fn veil_token_notes_a_user_the_directory_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = veil::demo::prepare(dir.path()).unwrap();
    let unknown = |stderr: &str| stderr.contains("the directory has no user 'alcie'");
    // Before any server ran, the config's users are the directory.
    let stderr = token_stderr(dir.path(), "alcie");
    assert!(
        unknown(&stderr) && stderr.contains("veil admin users"),
        "{stderr}"
    );
    assert_eq!(token_stderr(dir.path(), "alice"), "");
    // Once the store exists, users put at run time count as well.
    let cfg = Config::load(&cfg_path).unwrap();
    let store = veil::server::open_store(&cfg).await.unwrap();
    let erin = veil::model::identity::Identity::new(cfg.auth.default_issuer(), "erin");
    store
        .put_user(
            &erin,
            &veil::model::identity::UserRecord::default(),
            veil::model::Origin::Runtime,
        )
        .await
        .unwrap();
    drop(store);
    assert_eq!(token_stderr(dir.path(), "erin"), "");
    assert!(unknown(&token_stderr(dir.path(), "alcie")));
}

#[test]
fn veil_token_finds_the_demo_from_a_subdirectory() {
    let clone = tempfile::tempdir().unwrap();
    veil::demo::prepare(&clone.path().join("veil-data")).unwrap();
    let sub = clone.path().join("client-py/src");
    std::fs::create_dir_all(&sub).unwrap();
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["token", "--user", "alice"])
        .current_dir(&sub)
        .env_remove("VEIL_DATA_DIR")
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // It says whose key signs the token.
    assert!(
        stderr.starts_with("veil: using ") && stderr.trim_end().ends_with("veil-data"),
        "{stderr}"
    );
    // Signed with the demo's key: it verifies against that config.
    let token = String::from_utf8(out.stdout).unwrap();
    let cfg = Config::load(&clone.path().join("veil-data/veil.toml")).unwrap();
    let verifier = veil::auth::jwt::TokenVerifier::from_config(&cfg.auth, &cfg.base_dir).unwrap();
    assert!(verifier.verify(token.trim()).is_ok(), "{token}");
    // Nowhere above: the error says where it looked.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["token", "--user", "alice"])
        .current_dir(elsewhere.path())
        .env_remove("VEIL_DATA_DIR")
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Veil data directory at 'veil-data'"));
}

#[test]
fn veil_admin_without_a_token_says_how_to_get_one() {
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["admin", "whoami"])
        .env_remove("VEIL_TOKEN")
        .env("VEIL_ADDRESS", "grpc://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("no token")
            && stderr.contains("VEIL_TOKEN")
            && stderr.contains("veil token"),
        "{stderr}"
    );
}
