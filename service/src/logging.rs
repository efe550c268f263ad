//! The process log (stderr): its format, and why no caller can forge a line
//! in it.
//!
//! Log lines carry values callers chose: token subjects, dataset names, SQL,
//! filters, and error messages that quote them. A newline in one of them
//! would let a caller append a line of their own (`... INFO veil: access
//! granted`), and an escape sequence could rewrite the terminal showing the
//! log. So no value reaches the log raw, whatever the call site wrote:
//!
//! * `text` (the default): every field value, span field and message goes
//!   through [`EscapedFields`], which writes control characters (C0, DEL,
//!   C1), the Unicode line and paragraph separators and the bidirectional
//!   controls as escapes (`\n`, `\u{1b}`, `\u{2028}`);
//! * `json`: one JSON object per line; JSON escapes C0 controls itself, and
//!   [`JsonSafe`] escapes the other characters above as `\uXXXX`, which JSON
//!   readers decode back to the value sent.
//!
//! One event is always one line.

use std::fmt::{self, Write as _};
use std::io;

use tracing::field::{Field, Visit};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written (`veil serve --log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO veil::...: message key=value`, escaped.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields, spans.
    Json,
}

/// Log to stderr in `format`, at the level `RUST_LOG` sets (default `info`).
pub fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(format, std::io::stderr, ansi))
        .init();
}

/// The formatting layer for `format`, writing to `writer` (stderr, or a
/// buffer in tests).
pub fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(JsonSafe(writer))
            .boxed(),
    }
}

/// Characters a log line never holds raw: they end lines (`\n`, `\r`,
/// U+0085, U+2028, U+2029), drive terminals (ESC, other C0 and C1 controls,
/// DEL) or reorder what a reader sees (bidirectional controls).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// A `fmt::Write` that escapes what [`needs_escape`] as it writes.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(needs_escape) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// The text format's fields: like tracing-subscriber's default (message
/// first, then `name=value` with `Debug` values), with every value and the
/// message escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{}", ErrorChain(value)))
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // Metadata of events bridged from the `log` crate, which the event
        // formatter already shows.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = self.write_field(name, value);
    }
}

impl EscapingVisitor<'_> {
    fn write_field(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if name != "message" {
            // Field names are identifiers in Veil's code, never input.
            write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

/// An error and its sources, `outer: inner: root`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// Writes JSON log lines with the characters JSON leaves raw (DEL, C1
/// controls, U+2028/U+2029, bidirectional controls) as `\uXXXX`. JSON
/// already escapes C0 controls inside strings, and outside strings a JSON
/// line is ASCII punctuation, so these characters only occur inside strings,
/// where `\uXXXX` is the same value.
#[derive(Debug)]
pub struct JsonSafe<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonSafe<M> {
    type Writer = JsonSafeWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonSafeWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        JsonSafeWriter(self.0.make_writer_for(meta))
    }
}

#[derive(Debug)]
pub struct JsonSafeWriter<W>(W);

fn json_needs_escape(c: char) -> bool {
    // C0 controls are escaped by JSON; the one left is the line's end.
    c > '\u{1f}' && needs_escape(c)
}

impl<W: io::Write> io::Write for JsonSafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains(json_needs_escape) => {
                let mut out = String::with_capacity(text.len() + 32);
                for c in text.chars() {
                    if json_needs_escape(c) {
                        // All of them are in the Basic Multilingual Plane.
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        out.push(c);
                    }
                }
                self.0.write_all(out.as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Everything the layer writes.
    #[derive(Debug, Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO veil: forged";

    /// A subject with every kind of character a log must not hold raw.
    fn hostile() -> String {
        format!(
            "alice{FORGED}\r\n\t\u{1b}[31mred\u{7}\u{7f}\u{85}\u{9b}\u{2028}x\u{2029}y\u{202e}txt.exe\u{2066}"
        )
    }

    #[derive(Debug)]
    struct Outer(String, std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "outer {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    /// Log events carrying the hostile value every way a call site can:
    /// Display, Debug, a plain string, the message, a span field, an error
    /// and its source. Returns what was written and the number of events.
    fn log_hostile(format: LogFormat) -> (String, usize) {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(layer(format, buffer.clone(), false));
        let h = hostile();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(user = %h, dataset = h.as_str(), sql = ?h, "read finished");
            tracing::warn!("explain for {h}");
            let span = tracing::info_span!("request", subject = %h, filter = h.as_str());
            let _entered = span.enter();
            let err = Outer(h.clone(), io::Error::other(h.clone()));
            tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
            tracing::info!(error = %err, "inside the span");
        });
        let bytes = buffer.0.lock().unwrap().clone();
        (String::from_utf8(bytes).unwrap(), 4)
    }

    fn assert_one_clean_line_per_event(out: &str, events: usize) {
        assert!(out.ends_with('\n'), "{out}");
        assert_eq!(out.matches('\n').count(), events, "{out}");
        for line in out.lines() {
            assert!(!line.starts_with("2026-01-01"), "forged line: {line}");
            if let Some(c) = line.chars().find(|&c| needs_escape(c)) {
                panic!("raw {:?} in {line}", c);
            }
        }
    }

    #[test]
    fn text_lines_escape_every_field_message_span_and_error() {
        let (out, events) = log_hostile(LogFormat::Text);
        assert_one_clean_line_per_event(&out, events);
        let first = out.lines().next().unwrap();
        // Display values, Debug values and plain strings are all escaped.
        assert!(
            first.contains(r"user=alice\n2026-01-01T00:00:00Z  INFO veil: forged\r\n\t\u{1b}[31m"),
            "{first}"
        );
        assert!(
            first.contains(r"\u{85}\u{9b}\u{2028}x\u{2029}y\u{202e}txt.exe\u{2066}"),
            "{first}"
        );
        assert!(first.contains(r#"dataset="alice\n2026"#), "{first}");
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .contains(r"explain for alice\n2026")
        );
        // Span fields (shown before the message) and error sources too.
        let last = out.lines().last().unwrap();
        assert!(last.contains(r"request{subject=alice\n2026"), "{last}");
        let error = out.lines().nth(2).unwrap();
        assert!(error.contains(r"error=outer alice\n2026"), "{error}");
        assert!(error.contains(r"forged\r\n"), "{error}");
    }

    #[test]
    fn json_lines_parse_back_to_the_exact_values() {
        let (out, events) = log_hostile(LogFormat::Json);
        assert_one_clean_line_per_event(&out, events);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let h = hostile();
        assert_eq!(lines[0]["fields"]["user"], h.as_str());
        assert_eq!(lines[0]["fields"]["dataset"], h.as_str());
        assert_eq!(lines[0]["fields"]["message"], "read finished");
        assert_eq!(lines[1]["fields"]["message"], format!("explain for {h}"));
        assert_eq!(lines[3]["span"]["subject"], h.as_str());
        assert_eq!(lines[3]["span"]["filter"], h.as_str());
    }

    #[test]
    fn plain_values_are_written_as_before() {
        let buffer = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(layer(LogFormat::Text, buffer.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(rows = 3, dataset = "clinical.trials", user = %"alice", "read finished");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.trim_end()
                .ends_with("read finished rows=3 dataset=\"clinical.trials\" user=alice"),
            "{out}"
        );
    }
}
