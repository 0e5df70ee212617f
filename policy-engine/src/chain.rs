//! Chain evaluation: runs the input, tool and output phases in chain order, short-circuits
//! on block or escalate, applies redactions to the body as they happen (later policies see
//! redacted text), and records one `PolicyResult` per policy.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compile::CompiledPolicy;
use crate::decision::{Decision, PolicyResult, Verdict};
use crate::exchange::{self, Headers, TextSegment, ToolUse};
use crate::kinds::{Phase, snake};
use crate::normalize::DetectionView;
use crate::policies::{Edit, EvalContext, Outcome, Policy, PolicyError};
use crate::scan::HitCache;
use crate::scan::joints::{self, Vocabulary};

/// What happens when a policy itself fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// The request is blocked (`<kind>.error`).
    #[default]
    Block,
    /// The failing policy counts as allow; the decision is marked degraded.
    Allow,
}

#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    pub fail_mode: FailMode,
    /// Measure each policy's evaluation time (`PolicyResult::duration_us`); without it the
    /// durations are zero and no clock is read. On by default.
    pub time_policies: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            fail_mode: FailMode::default(),
            time_policies: true,
        }
    }
}

/// Which body a phase looks at.
#[derive(Clone, Copy)]
enum Subject {
    Request,
    Response,
}

/// How the body under evaluation is read.
#[derive(Clone, Copy)]
enum Reading<'v, 't> {
    /// As a tree, with its texts.
    Tree(Subject, &'v Value, &'v [TextSegment<'t>]),
    /// An answer's texts only (no tool calls), without a tree.
    View(&'v [TextSegment<'t>]),
}

impl CompiledPolicy {
    /// Input phase then tool phase (tool declarations and calls in the request). Redactions
    /// are written into `body`.
    pub fn evaluate_request(&self, body: &mut Value, headers: &Headers, opts: EvalOptions) -> Decision {
        if !self.config().pack.enabled {
            return self.disabled(Phase::Input);
        }
        let mut d = self.run_phase(Phase::Input, Subject::Request, body, None, headers, opts, None);
        if !d.verdict.is_terminal() {
            let t = self.run_phase(Phase::Tool, Subject::Request, body, None, headers, opts, None);
            d.absorb(t);
        } else {
            d.policy_results
                .extend(self.skipped(Phase::Tool, "chain short-circuited"));
        }
        d
    }

    /// Tool phase on the model's tool calls, then the output phase. Redactions are written
    /// into `response`.
    pub fn evaluate_response(
        &self,
        request: &Value,
        response: &mut Value,
        headers: &Headers,
        opts: EvalOptions,
    ) -> Decision {
        if !self.config().pack.enabled {
            return self.disabled(Phase::Output);
        }
        let mut d = self.run_phase(
            Phase::Tool,
            Subject::Response,
            response,
            Some(request),
            headers,
            opts,
            None,
        );
        if !d.verdict.is_terminal() {
            let o = self.run_phase(
                Phase::Output,
                Subject::Response,
                response,
                Some(request),
                headers,
                opts,
                None,
            );
            d.absorb(o);
        } else {
            d.policy_results
                .extend(self.skipped(Phase::Output, "chain short-circuited"));
        }
        d
    }

    /// The output phase over one piece of generated text, returning the redactions as
    /// (range in `text`, replacement) pairs instead of applying them: streaming needs to
    /// know where each one is so it only commits those that are complete.
    pub fn evaluate_output_text(
        &self,
        request: &Value,
        text: &str,
        headers: &Headers,
        opts: EvalOptions,
    ) -> (Decision, Vec<(std::ops::Range<usize>, String)>) {
        if !self.config().pack.enabled {
            return (self.disabled(Phase::Output), Vec::new());
        }
        // The text is the answer's only segment: read as a view, no answer tree is built.
        let mut decision = Decision::default();
        let mut rounds: Vec<Vec<Edit>> = Vec::new();
        let mut current = text.to_owned();
        let mut next = 0;
        loop {
            let segment = [TextSegment {
                role: exchange::Role::Assistant,
                path: Vec::new(),
                text: &current,
            }];
            let reading = Reading::View(&segment);
            let Some(edits) =
                self.run_policies(Phase::Output, reading, request, headers, opts, &mut decision, &mut next)
            else {
                break;
            };
            let refs: Vec<&Edit> = {
                let mut r: Vec<&Edit> = edits.iter().filter(|e| e.segment == 0).collect();
                r.sort_by_key(|e| e.range.start);
                r
            };
            let rewritten = crate::policies::redaction::apply(&current, &refs);
            rounds.push(edits);
            current = rewritten;
        }
        (decision, crate::stream::edits::compose(&rounds))
    }

    fn disabled(&self, phase: Phase) -> Decision {
        Decision {
            policy_results: self.skipped(phase, "pack disabled"),
            ..Decision::default()
        }
    }

    fn skipped(&self, phase: Phase, note: &str) -> Vec<PolicyResult> {
        self.chain
            .iter()
            .filter(|p| p.phases().contains(&phase))
            .map(|p| PolicyResult::skipped(p.kind(), phase, note))
            .collect()
    }

    /// The tool and output phases over an answer read as a view (its texts, no tool calls:
    /// see `exchange::chat_answer_view`) instead of a tree. The decision is the one
    /// `evaluate_response` gives for the same answer as long as no policy rewrites it;
    /// when one would, this gives `None` and the answer is evaluated as a tree.
    pub fn evaluate_answer_view(
        &self,
        request: &Value,
        texts: &[TextSegment<'_>],
        headers: &Headers,
        opts: EvalOptions,
    ) -> Option<Decision> {
        if !self.config().pack.enabled {
            return Some(self.disabled(Phase::Output));
        }
        let mut d = Decision::default();
        let view = Reading::View(texts);
        for phase in [Phase::Tool, Phase::Output] {
            if d.verdict.is_terminal() {
                d.policy_results.extend(self.skipped(phase, "chain short-circuited"));
                continue;
            }
            let mut next = 0;
            if self
                .run_policies(phase, view, request, headers, opts, &mut d, &mut next)
                .is_some()
            {
                return None;
            }
        }
        Some(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_phase(
        &self,
        phase: Phase,
        subject: Subject,
        body: &mut Value,
        request: Option<&Value>,
        headers: &Headers,
        opts: EvalOptions,
        mut applied: Option<&mut Vec<Vec<Edit>>>,
    ) -> Decision {
        let mut decision = Decision::default();
        if self.phase_members(phase).is_empty() {
            return decision;
        }
        let mut next = 0;
        loop {
            let pending: Option<Vec<(Vec<exchange::Seg>, String)>> = {
                let view: &Value = body;
                let texts: Vec<TextSegment<'_>> = match (phase, subject) {
                    (Phase::Tool, _) => Vec::new(),
                    (_, Subject::Request) => exchange::request_texts(view),
                    (_, Subject::Response) => exchange::response_texts(view),
                };
                let req = request.unwrap_or(view);
                let run = self.run_policies(
                    phase,
                    Reading::Tree(subject, view, &texts),
                    req,
                    headers,
                    opts,
                    &mut decision,
                    &mut next,
                );
                run.map(|edits| {
                    if let Some(log) = applied.as_deref_mut() {
                        log.push(edits.clone());
                    }
                    rewrites(&texts, edits)
                })
            };
            match pending {
                Some(writes) => {
                    for (path, text) in writes {
                        exchange::write_text(body, &path, text);
                    }
                }
                None => break,
            }
        }
        decision
    }

    /// Runs the phase's policies from `next` on over one reading of the body, folding
    /// their outcomes into `decision`; stops at the first policy that rewrites the body
    /// and gives its edits (the caller applies them and calls again from `next`).
    #[allow(clippy::too_many_arguments)]
    fn run_policies(
        &self,
        phase: Phase,
        body: Reading<'_, '_>,
        request: &Value,
        headers: &Headers,
        opts: EvalOptions,
        decision: &mut Decision,
        next: &mut usize,
    ) -> Option<Vec<Edit>> {
        let policies = self.phase_members(phase);
        let (texts, tools) = body.parts(phase);
        // The policies read the detection view of each text (disguises folded away); their
        // edits are led back to the source text below.
        let views: Vec<DetectionView<'_>> = texts.iter().map(|t| DetectionView::of(t.text)).collect();
        let folded = views.iter().any(DetectionView::is_folded);
        let view_texts = if folded {
            view_segments(texts, &views)
        } else {
            Vec::new()
        };
        let seen = if folded { &view_texts[..] } else { texts };
        let hits = HitCache::joined(self.scanners.for_phase(phase), seen, &views);
        let cx = EvalContext {
            hits: &hits,
            phase,
            texts: seen,
            tools: &tools,
            headers,
            request,
            model: exchange::request_model(request),
        };
        // Texts with a joint (a character dropped between two word characters) are read a
        // second time with their joints as spaces; each policy's stricter outcome counts.
        let spaced = spaced_views(texts, &views);
        let spaced_texts = view_segments(texts, &spaced);
        let spaced_hits = HitCache::new(self.scanners.for_phase(phase), &spaced_texts);
        let spaced_cx = EvalContext {
            hits: &spaced_hits,
            texts: &spaced_texts,
            ..cx
        };
        let second = (!spaced.is_empty()).then_some((&spaced_cx, &spaced[..]));
        // Texts whose joints the detectors' words read some as spaces and some as nothing
        // get a third reading with each joint as those words say (see `scan::joints`).
        let resolved = resolved_views(texts, &views, self.scanners.vocabulary());
        let resolved_texts = view_segments(texts, &resolved);
        let resolved_hits = HitCache::new(self.scanners.for_phase(phase), &resolved_texts);
        let resolved_cx = EvalContext {
            hits: &resolved_hits,
            texts: &resolved_texts,
            ..cx
        };
        let third = (!resolved.is_empty()).then_some((&resolved_cx, &resolved[..]));
        // One clock read per policy run (each one's time runs from the previous reading).
        let mut clock = opts.time_policies.then(Instant::now);
        while *next < policies.len() {
            let policy = &self.chain[policies[*next]];
            *next += 1;
            if skips(decision, policy.as_ref(), phase, tools.is_empty()) {
                continue;
            }
            let outcome = evaluate_readings(policy.as_ref(), (&cx, &views), [second, third]);
            let elapsed = lap(&mut clock);
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    record_failure(decision, (policy.kind(), phase), &e, elapsed, opts.fail_mode);
                    continue;
                }
            };
            let edits = record(decision, policy.kind(), phase, outcome, elapsed);
            if !edits.is_empty() {
                return Some(if folded { merge_overlaps(edits) } else { edits });
            }
        }
        None
    }
}

/// The time since the clock's last reading (zero without a clock), and a new reading.
fn lap(clock: &mut Option<Instant>) -> Duration {
    clock.as_mut().map_or(Duration::ZERO, |t| {
        let now = Instant::now();
        let spent = now - *t;
        *t = now;
        spent
    })
}

impl<'v, 't> Reading<'v, 't> {
    /// The texts the phase reads, and the tool declarations and calls it checks.
    fn parts(self, phase: Phase) -> (&'v [TextSegment<'t>], Vec<ToolUse<'v>>) {
        match self {
            Reading::Tree(subject, view, texts) => (
                texts,
                match (phase, subject) {
                    (Phase::Tool, Subject::Request) => exchange::request_tools(view),
                    (Phase::Tool, _) => exchange::response_tools(view),
                    _ => Vec::new(),
                },
            ),
            // A view has no tool calls and no text for the tool phase.
            Reading::View(texts) => (if phase == Phase::Tool { &[] } else { texts }, Vec::new()),
        }
    }
}

/// Whether `policy` does not run now: after a terminal verdict or while disabled (both
/// recorded as skipped), or in the tool phase of a body without tools.
fn skips(decision: &mut Decision, policy: &dyn Policy, phase: Phase, no_tools: bool) -> bool {
    let note = if decision.verdict.is_terminal() {
        "chain short-circuited"
    } else if !policy.enabled() {
        "disabled"
    } else {
        return phase == Phase::Tool && no_tools;
    };
    decision
        .policy_results
        .push(PolicyResult::skipped(policy.kind(), phase, note));
    true
}

/// A policy that could not be evaluated: skipped and the decision marked degraded, or the
/// request blocked (`<kind>.error`), as `fail_mode` says.
fn record_failure(
    decision: &mut Decision,
    (kind, phase): (&'static str, Phase),
    e: &PolicyError,
    elapsed: Duration,
    fail_mode: FailMode,
) {
    let mut r = PolicyResult::skipped(kind, phase, &format!("error: {e}"));
    r.set_duration(elapsed);
    match fail_mode {
        FailMode::Allow => decision.degraded = true,
        FailMode::Block => {
            r.verdict = Verdict::Block;
            r.reason_code = Some(format!("{}.error", snake(kind)));
            decision.verdict = Verdict::Block;
            decision.reason_code = r.reason_code.clone();
            decision.policy = Some(kind);
            decision.phase = Some(phase);
            decision.message = Some(format!("Request blocked: policy {kind} could not be evaluated"));
        }
    }
    decision.policy_results.push(r);
}

/// The segments as the policies see them: each text's detection view, same roles.
fn view_segments<'v>(texts: &[TextSegment<'_>], views: &'v [DetectionView<'_>]) -> Vec<TextSegment<'v>> {
    texts
        .iter()
        .zip(views)
        .map(|(t, v)| TextSegment {
            role: t.role,
            path: Vec::new(),
            text: &v.text,
        })
        .collect()
}

/// The spaced reading of every text (see `normalize`) when any text has a joint; else none.
fn spaced_views<'t>(texts: &[TextSegment<'t>], views: &[DetectionView<'t>]) -> Vec<DetectionView<'t>> {
    if !views.iter().any(DetectionView::has_joint) {
        return Vec::new();
    }
    texts
        .iter()
        .zip(views)
        .map(|(t, v)| match v.has_joint() {
            true => DetectionView::spaced(t.text),
            false => v.clone(),
        })
        .collect()
}

/// The third reading of every text (see `scan::joints`) when some text's joints read
/// best some as spaces and some as nothing; else none.
fn resolved_views<'t>(
    texts: &[TextSegment<'t>],
    views: &[DetectionView<'t>],
    vocabulary: &Vocabulary,
) -> Vec<DetectionView<'t>> {
    if vocabulary.is_empty() || !views.iter().any(DetectionView::has_joint) {
        return Vec::new();
    }
    let mut mixed = false;
    let resolved: Vec<DetectionView<'t>> = texts
        .iter()
        .zip(views)
        .map(|(t, v)| {
            if !v.has_joint() {
                return v.clone();
            }
            let spaces = joints::choose(&v.text, v.joints(), vocabulary);
            mixed |= spaces.contains(&true) && spaces.contains(&false);
            DetectionView::resolved(t.text, &spaces)
        })
        .collect();
    if mixed { resolved } else { Vec::new() }
}

/// A policy's outcome over the views, with its edits led back to the source texts; with
/// `other` readings, the strictest of the outcomes.
fn evaluate_readings(
    policy: &dyn Policy,
    (cx, views): (&EvalContext<'_>, &[DetectionView<'_>]),
    other: [Option<(&EvalContext<'_>, &[DetectionView<'_>])>; 2],
) -> Result<Outcome, PolicyError> {
    let mut first = policy.evaluate(cx)?;
    lead_back(views, &mut first.edits);
    let mut failed = None;
    for (cx, views) in other.into_iter().flatten() {
        match policy.evaluate(cx) {
            Ok(mut o) => {
                lead_back(views, &mut o.edits);
                first = stricter(first, o);
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    // A failing further reading does not undo what another one found.
    match failed {
        Some(e) if first.verdict.is_none_or(|v| v <= Verdict::Allow) => Err(e),
        _ => Ok(first),
    }
}

/// The stricter of one policy's outcomes over two readings of the same texts; when their
/// verdicts agree, the first with the edits and entities of both (and the other's reason
/// when the first has none: a detection in log mode is an allow with a reason).
fn stricter(mut first: Outcome, other: Outcome) -> Outcome {
    let rank = |o: &Outcome| o.verdict.unwrap_or(Verdict::Allow);
    match rank(&other).cmp(&rank(&first)) {
        std::cmp::Ordering::Greater => other,
        std::cmp::Ordering::Less => first,
        std::cmp::Ordering::Equal => {
            if first.reason.is_none() && other.reason.is_some() {
                first.reason = other.reason;
                first.message = other.message;
                first.note = other.note;
            }
            first.edits.extend(other.edits);
            for e in other.entities {
                if !first.entities.contains(&e) {
                    first.entities.push(e);
                }
            }
            first.matches = first.matches.max(other.matches);
            first
        }
    }
}

/// Edits made on a detection view, as edits of its source text.
fn lead_back(views: &[DetectionView<'_>], edits: &mut [Edit]) {
    for e in edits {
        if let Some(v) = views.get(e.segment) {
            e.range = v.to_source(e.range.clone());
        }
    }
}

/// Edits led back to the source texts, with the ones that now overlap merged: two findings
/// inside one folded cluster, or one finding made in both readings of a text. A merged
/// edit covers all the text its parts covered and carries the replacement of the widest
/// part only: two partial masks side by side would show more of the secret than either.
fn merge_overlaps(mut edits: Vec<Edit>) -> Vec<Edit> {
    edits.sort_by(|a, b| {
        (a.segment, a.range.start, a.range.end, &a.replacement).cmp(&(
            b.segment,
            b.range.start,
            b.range.end,
            &b.replacement,
        ))
    });
    edits.dedup();
    let mut out: Vec<Edit> = Vec::with_capacity(edits.len());
    // The source length of the part whose replacement the last merged edit carries.
    let mut kept = 0;
    for e in edits {
        match out.last_mut() {
            Some(last) if last.segment == e.segment && e.range.start < last.range.end => {
                last.range.end = last.range.end.max(e.range.end);
                if e.range.len() > kept {
                    kept = e.range.len();
                    last.replacement = e.replacement;
                }
            }
            _ => {
                kept = e.range.len();
                out.push(e);
            }
        }
    }
    out
}

/// The new text of every segment that `edits` touch, with the path to write it to.
fn rewrites(texts: &[TextSegment<'_>], mut edits: Vec<Edit>) -> Vec<(Vec<exchange::Seg>, String)> {
    edits.sort_by_key(|e| (e.segment, e.range.start));
    edits
        .chunk_by(|a, b| a.segment == b.segment)
        .map(|group| {
            let seg = &texts[group[0].segment];
            let refs: Vec<&Edit> = group.iter().collect();
            (seg.path.clone(), crate::policies::redaction::apply(seg.text, &refs))
        })
        .collect()
}

/// Folds one policy outcome into the decision; returns the edits to apply.
fn record(decision: &mut Decision, kind: &'static str, phase: Phase, outcome: Outcome, elapsed: Duration) -> Vec<Edit> {
    let verdict = outcome.verdict();
    let reason_code = outcome.reason.map(|r| format!("{}.{r}", snake(kind)));
    let mut result = PolicyResult {
        kind,
        phase,
        verdict,
        reason_code: reason_code.clone(),
        entities: outcome.entities,
        matches: outcome.matches,
        duration_us: 0.0,
        note: outcome.note,
    };
    result.set_duration(elapsed);
    decision.policy_results.push(result);
    if outcome.allowed_targets.is_some() {
        decision.allowed_targets = outcome.allowed_targets;
    }
    if verdict > decision.verdict {
        decision.verdict = verdict;
        decision.reason_code = reason_code;
        decision.policy = Some(kind);
        decision.message = outcome.message;
        decision.phase = Some(phase);
    }
    outcome.edits
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policies::{Policy, PolicyError};

    /// An input-phase test policy of kind `.0` whose evaluation is `.1`.
    #[derive(Debug)]
    struct Stub(&'static str, fn() -> Result<Outcome, PolicyError>);

    impl Policy for Stub {
        /// An input-phase entry; the stub reports its own kind name.
        fn entry(&self) -> &'static crate::policies::KindEntry {
            &crate::policies::audit::KIND
        }
        fn kind(&self) -> &'static str {
            self.0
        }
        fn evaluate(&self, _: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
            (self.1)()
        }
    }

    fn failing() -> Box<Stub> {
        Box::new(Stub("dlp-filter", || Err(PolicyError("backend unavailable".into()))))
    }

    fn allowing() -> Box<Stub> {
        Box::new(Stub("audit-logger", || Ok(Outcome::allow())))
    }

    fn slow() -> Box<Stub> {
        Box::new(Stub("audit-logger", || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(Outcome::allow())
        }))
    }

    fn run(mode: FailMode) -> Decision {
        let policy = CompiledPolicy::with_chain(vec![failing(), allowing()]);
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        policy.evaluate_request(
            &mut body,
            &Headers::new(),
            EvalOptions {
                fail_mode: mode,
                ..EvalOptions::default()
            },
        )
    }

    #[test]
    fn policies_are_timed_only_when_asked() {
        let policy = CompiledPolicy::with_chain(vec![slow(), allowing(), slow()]);
        let run = |time_policies| {
            let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
            let opts = EvalOptions {
                time_policies,
                ..EvalOptions::default()
            };
            let d = policy.evaluate_request(&mut body, &Headers::new(), opts);
            d.policy_results.iter().map(|r| r.duration_us).collect::<Vec<_>>()
        };
        let timed = run(true);
        assert!(timed[0] >= 1000.0 && timed[2] >= 1000.0, "{timed:?}");
        assert!(timed[1] < 1000.0, "each policy is charged its own time only: {timed:?}");
        assert_eq!(run(false), vec![0.0; 3]);
    }

    #[test]
    fn fail_mode_block_stops_the_request() {
        let d = run(FailMode::Block);
        assert_eq!(d.verdict, Verdict::Block);
        assert_eq!(d.reason_code.as_deref(), Some("dlp_filter.error"));
        assert_eq!(d.policy_results[1].note.as_deref(), Some("chain short-circuited"));
        assert!(!d.degraded);
    }

    fn edit(segment: usize, range: std::ops::Range<usize>, replacement: &str) -> Edit {
        Edit {
            segment,
            range,
            replacement: replacement.into(),
        }
    }

    #[test]
    fn the_stricter_reading_wins_and_equal_readings_pool_their_edits() {
        let redact = |edits: Vec<Edit>, entity: &str| Outcome {
            verdict: Some(Verdict::Redact),
            edits,
            entities: vec![entity.into()],
            matches: 1,
            ..Outcome::default()
        };
        let block = Outcome::block("detected", "no");
        assert_eq!(stricter(redact(vec![], "email"), block.clone()), block);
        assert_eq!(stricter(block.clone(), Outcome::allow()), block);
        let both = stricter(
            redact(vec![edit(0, 0..3, "[A]")], "email"),
            redact(vec![edit(0, 5..9, "[B]")], "term"),
        );
        assert_eq!(both.edits, vec![edit(0, 0..3, "[A]"), edit(0, 5..9, "[B]")]);
        assert_eq!(both.entities, vec!["email".to_owned(), "term".to_owned()]);
    }

    #[test]
    fn one_finding_made_in_both_readings_is_one_edit() {
        let merged = merge_overlaps(vec![
            edit(0, 4..9, "[E]"),
            edit(1, 0..2, "[X]"),
            edit(0, 4..6, "[F]"),
            edit(0, 4..9, "[E]"),
            edit(0, 12..14, "[G]"),
        ]);
        assert_eq!(
            merged,
            vec![edit(0, 4..9, "[E]"), edit(0, 12..14, "[G]"), edit(1, 0..2, "[X]")],
            "duplicates dropped, overlaps merged under the widest part's replacement"
        );
        // Two partial masks of one number found with different extents: one mask over the
        // union, never the digits each shows side by side.
        let merged = merge_overlaps(vec![edit(0, 0..8, "****2222"), edit(0, 0..21, "*****************4455")]);
        assert_eq!(merged, vec![edit(0, 0..21, "*****************4455")]);
        let merged = merge_overlaps(vec![
            edit(0, 0..10, "[A]"),
            edit(0, 6..14, "[B]"),
            edit(0, 13..15, "[C]"),
        ]);
        assert_eq!(
            merged,
            vec![edit(0, 0..15, "[A]")],
            "the widest part (the first) gives the replacement"
        );
    }

    #[test]
    fn a_detection_only_the_second_reading_makes_keeps_its_reason() {
        let logged = Outcome {
            reason: Some("detected"),
            note: Some("score 1.00".into()),
            ..Outcome::default()
        };
        let got = stricter(Outcome::allow(), logged.clone());
        assert_eq!((got.reason, got.note), (logged.reason, logged.note));
    }

    #[test]
    fn fail_mode_allow_continues_degraded() {
        let d = run(FailMode::Allow);
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.degraded);
        assert_eq!(d.policy_results[0].note.as_deref(), Some("error: backend unavailable"));
        assert_eq!(d.policy_results[1].note, None, "later policies still run");
    }
}
