//! The layering of `service/src`, checked: every top-level module imports
//! only from modules in lower layers, so there is no import circle, and
//! `model` imports nothing from Veil at all.
//!
//! The check reads the sources (`src/**/*.rs`), blanks out comments and
//! string and character literals, and collects per top-level module every
//! `crate::<module>` path (including each item of a `use crate::{...}`
//! group) and every `super::` chain that climbs out of the module. The
//! binary (`main.rs` and the modules it declares: the CLI) sits above
//! everything and is not checked; this file is the checker and is skipped.
//!
//! Run it alone with `cargo test --workspace --lib layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import from modules of strictly lower layers
/// only; modules of one layer don't import one another. A new top-level
/// module must be placed here.
const LAYERS: &[&[&str]] = &[
    // Plain records, and helpers that know nothing of Veil.
    &["model", "redact", "logging", "memory"],
    // `VeilError`, and DataFusion's and the policy barrier's errors as it.
    &["error"],
    // Keys; the config file's form.
    &["secrets", "config"],
    // Demo data; the SQL Veil accepts (limits, bounded functions, the
    // planner threads); differential privacy's exact noise and accounting.
    &["demo", "sql", "dp"],
    // Policy rules and enforcement, pure over records: no state, no I/O.
    &["policy"],
    // State: the store backends (they validate the policies they keep).
    &["store"],
    &["audit"],
    // What data exists: sources, files, dictionaries, the state cache.
    &["catalog"],
    &["auth"],
    // The config file applied to the store (start-up, reload).
    &["provisioning"],
    &["engine"],
    // Administrative use cases, transport-free.
    &["governance"],
    // Protocol adapters, then the wiring that serves them.
    &["flight"],
    &["server"],
];

/// Every reference of one top-level module to another.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<String>,
    /// (from, to) → where, as `file:line`.
    edges: BTreeMap<(String, String), Vec<String>>,
}

impl Graph {
    fn targets(&self, from: &str) -> impl Iterator<Item = &str> {
        self.edges
            .keys()
            .filter(move |(f, _)| f == from)
            .map(|(_, t)| t.as_str())
    }

    fn example(&self, from: &str, to: &str) -> String {
        let places = &self.edges[&(from.to_string(), to.to_string())];
        let shown: Vec<&str> = places.iter().take(3).map(String::as_str).collect();
        let more = places.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} (and {more} more)", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
}

/// `src` with comments and string and character literals replaced by
/// spaces (newlines kept, so line numbers still match).
fn code_only(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"..." / r#"..."# / br"...": ends at a quote and as many #.
            let open = chars[i..].iter().position(|c| *c == '"').unwrap_or(0) + i;
            (i..=open).for_each(|j| blank(&mut out, chars[j]));
            i = open + 1;
            while i < chars.len() {
                let closes =
                    chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#'));
                if closes {
                    (0..=hashes).for_each(|_| out.push(' '));
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw string starting at `i`, if one does.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    if after_ident {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// `'x'`, `'\n'`, `'\u{1F}'` rather than a lifetime or label (`'a`).
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

fn ident_at(code: &[char], i: usize) -> Option<String> {
    let id: String = code[i.min(code.len())..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .collect();
    (!id.is_empty() && !id.starts_with(|c: char| c.is_ascii_digit())).then_some(id)
}

fn starts_with(code: &[char], i: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| code.get(i + k) == Some(&c))
}

/// The first segment of each item of the `{...}` group opening at `i`.
fn group_heads(code: &[char], i: usize) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut j = i;
    while j < code.len() {
        match code[j] {
            '{' => {
                depth += 1;
                item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if c.is_whitespace() => {}
            _ if item_start && depth == 1 => {
                if let Some(id) = ident_at(code, j) {
                    heads.push((id.clone(), j));
                    j += id.len();
                    item_start = false;
                    continue;
                }
                item_start = false;
            }
            _ => {}
        }
        j += 1;
    }
    heads
}

/// The top-level modules `code` (of a file in module `module_path`)
/// refers to, each with the character offset of the reference.
fn references(code: &str, module_path: &[String]) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let boundary = |i: usize| {
        i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == '$')
    };
    let mut i = 0;
    while i < chars.len() {
        if starts_with(&chars, i, "crate::") && boundary(i) {
            let at = i + "crate::".len();
            match chars.get(at) {
                Some('{') => out.extend(group_heads(&chars, at)),
                _ => out.extend(ident_at(&chars, at).map(|id| (id, at))),
            }
            i = at;
        } else if starts_with(&chars, i, "super::")
            && boundary(i)
            && !(i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':')
        {
            let mut at = i;
            let mut ups = 0;
            while starts_with(&chars, at, "super::") {
                ups += 1;
                at += "super::".len();
            }
            // `super` from a file's module: only a chain that climbs to the
            // crate root names another top-level module.
            if ups >= module_path.len() {
                match chars.get(at) {
                    Some('{') => out.extend(group_heads(&chars, at)),
                    _ => out.extend(ident_at(&chars, at).map(|id| (id, at))),
                }
            }
            i = at;
        } else {
            i += 1;
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module graph of the library in `src`.
fn graph(src: &Path) -> Graph {
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let binary: BTreeSet<String> = code_only(&main)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("mod ")
                .and_then(|r| r.strip_suffix(';'))
                .map(str::to_string)
        })
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::default();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let mut module_path: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if module_path.last().is_some_and(|m| m == "mod") {
            module_path.pop();
        }
        let top = module_path[0].clone();
        if top == "lib" || top == "main" || top == "layers" || binary.contains(&top) {
            continue;
        }
        g.modules.insert(top.clone());
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = code_only(&text);
        let chars: Vec<char> = code.chars().collect();
        for (target, at) in references(&code, &module_path) {
            if target == top || target == "self" {
                continue;
            }
            let line = chars[..at].iter().filter(|c| **c == '\n').count() + 1;
            g.edges
                .entry((top.clone(), target))
                .or_default()
                .push(format!("{}:{line}", rel.display()));
        }
    }
    g
}

/// One import circle, if there is any: `[a, b, ..., a]`.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        g: &'a Graph,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m);
        for t in g.targets(m) {
            if let Some(c) = visit(g, t, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m);
        None
    }
    let mut done = BTreeSet::new();
    g.modules
        .iter()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn there_is_no_import_circle() {
    let g = graph(&source_dir());
    if let Some(cycle) = find_cycle(&g) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {}: {}", w[0], w[1], g.example(&w[0], &w[1])))
            .collect();
        panic!(
            "import circle: {}\n{}\nbreak it by moving the thing to the layer that owns it, passing values in, or a small trait in the lower layer (README, Architecture)",
            cycle.join(" -> "),
            steps.join("\n")
        );
    }
}

#[test]
fn modules_import_only_from_lower_layers() {
    let g = graph(&source_dir());
    let mut problems = Vec::new();
    for m in &g.modules {
        if layer_of(m).is_none() {
            problems.push(format!(
                "module `{m}` is in no layer: add it to LAYERS in src/layers.rs (and the README)"
            ));
        }
    }
    for (from, to) in g.edges.keys() {
        if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
            && b >= a
        {
            problems.push(format!(
                "`{from}` (layer {a}) imports `{to}` (layer {b}, not below it): {}",
                g.example(from, to)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_model_imports_nothing_from_veil() {
    let g = graph(&source_dir());
    let imports: Vec<String> = g
        .edges
        .keys()
        .filter(|(from, _)| from == "model")
        .map(|(_, to)| format!("model -> {to}: {}", g.example("model", to)))
        .collect();
    assert!(g.modules.contains("model"), "no model module found");
    assert!(
        imports.is_empty(),
        "the model is a leaf (std and external crates only):\n{}",
        imports.join("\n")
    );
}

/// The checker itself: it sees through comments and literals, follows
/// `use` groups and `super` chains, and reports a circle.
#[test]
fn the_checker_finds_what_it_should() {
    let code = code_only(
        "use crate::{a::X, b, c::{d, e}};\n// crate::hidden\nlet s = \"crate::nope\"; let r = r#\"crate::no\"#;\nlet c = '\"'; fn f<'a>(x: &'a crate::f::T) {}\n/* crate::block */ super::super::g::h();",
    );
    let found: Vec<String> = references(&code, &["m".into(), "n".into()])
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(found, ["a", "b", "c", "f", "g"]);
    let mut g = Graph::default();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("w", "x")] {
        g.modules.insert(a.into());
        g.edges
            .entry((a.into(), b.into()))
            .or_default()
            .push(format!("{a}.rs:1"));
    }
    let cycle = find_cycle(&g).expect("a circle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}
