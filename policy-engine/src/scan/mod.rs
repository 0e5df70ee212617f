//! Scan once: the literals every policy of a phase needs (blocked terms, entity names,
//! context words, the required prefixes of regexes) go into one case-insensitive automaton,
//! run once per text segment. Each policy gets back only its own hits, and runs its regexes
//! anchored at those hits instead of over the whole text.
//!
//! The automaton (see `automaton`) is a fully determinized Aho-Corasick machine searched
//! with interleaved streams.
//!
//! A regex whose matches cannot be tied to a literal prefix (say `\d{3}-\d{2}-\d{4}`) is
//! marked full-scan and searched over the whole text by its owner.

use std::cell::OnceCell;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

pub mod automaton;
pub mod joints;

use automaton::LiteralDfa;
use joints::Vocabulary;

use crate::exchange::TextSegment;
use crate::kinds::Phase;
use crate::normalize::{DetectionView, fold_literal};

/// Who registered a literal: one id per (policy, purpose).
pub type OwnerId = usize;

/// One literal found in a text segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The owner's own index for the literal (a term index, a regex index…).
    pub local: u32,
    pub start: usize,
    pub end: usize,
}

impl Hit {
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// Literals being collected while a chain compiles.
#[derive(Debug, Default)]
pub struct ScanPlan {
    /// (literal, owner, local index)
    literals: Vec<(String, OwnerId, u32)>,
    owners: usize,
    /// The words of the literals, and those the policies add (see `joints`).
    vocabulary: Vocabulary,
    /// The owners whose literals are also searched across a text's joints.
    across_joints: Vec<OwnerId>,
}

impl ScanPlan {
    /// A new owner: the literals it registers come back to it as hits.
    pub fn owner(&mut self) -> OwnerId {
        self.owners += 1;
        self.owners - 1
    }

    /// Registers `literal` for `owner` under the owner's index `local`. Matching is ASCII
    /// case-insensitive; non-ASCII literals also register their lower- and upper-case forms.
    ///
    /// Literals are folded as the texts are (see `normalize`): the scan runs over detection
    /// views, so a term is found however the text disguises it.
    pub fn add(&mut self, owner: OwnerId, local: u32, literal: &str) {
        let literal = fold_literal(literal);
        if literal.is_empty() {
            return;
        }
        self.vocabulary.add_words(&literal);
        if !literal.is_ascii() {
            for v in [literal.to_lowercase(), literal.to_uppercase()] {
                let v = fold_literal(&v).into_owned();
                if v != literal {
                    self.literals.push((v, owner, local));
                }
            }
        }
        self.literals.push((literal.into_owned(), owner, local));
    }

    /// Marks `owner`'s literals as whole terms, searched across joints too: a match that
    /// reads some of a text's joints as spaces is one of its hits (see
    /// [`LiteralDfa::for_each_joint_match`]). Other owners get plain matches only.
    pub fn across_joints(&mut self, owner: OwnerId) {
        self.across_joints.push(owner);
    }

    /// Words a policy reads that are not among its literals (the inner words of its
    /// regexes): they help choose how a text's joints read (see `joints`).
    pub fn add_vocabulary(&mut self, words: &Vocabulary) {
        self.vocabulary.extend(words);
    }

    /// One scanner over every literal: each phase's policies read their own owners' hits
    /// from the same single pass.
    pub fn build(self) -> Result<Scanners, String> {
        let owners = self.owners;
        let vocabulary = Arc::new(self.vocabulary);
        if self.literals.is_empty() {
            return Ok(Scanners { all: None, vocabulary });
        }
        // Identical literals (ignoring ASCII case) share one automaton pattern.
        let mut patterns: Vec<String> = Vec::new();
        let mut map: Vec<Vec<(OwnerId, u32)>> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (lit, owner, local) in self.literals {
            let at = *index.entry(lit.to_ascii_lowercase()).or_insert_with(|| {
                patterns.push(lit);
                map.push(Vec::new());
                patterns.len() - 1
            });
            map[at].push((owner, local));
        }
        let across = map
            .iter()
            .map(|m| {
                m.iter()
                    .copied()
                    .filter(|(o, _)| self.across_joints.contains(o))
                    .collect()
            })
            .collect();
        let scanner = Scanner::new(patterns, map, across, owners)?;
        Ok(Scanners {
            all: Some(Arc::new(scanner)),
            vocabulary,
        })
    }
}

fn fallback_automaton(patterns: &[String]) -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(patterns)
        .map_err(|e| format!("literal scanner: {e}"))
}

/// The compiled scanner of a chain (shared by its phases).
#[derive(Debug, Default, Clone)]
pub struct Scanners {
    all: Option<Arc<Scanner>>,
    vocabulary: Arc<Vocabulary>,
}

impl Scanners {
    /// The words the chain's detectors know (see `joints`).
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    pub fn for_phase(&self, phase: Phase) -> Option<&Scanner> {
        match phase {
            Phase::Tool => None,
            _ => self.all.as_deref(),
        }
    }
}

#[derive(Debug)]
pub struct Scanner {
    search: Search,
    /// Automaton pattern → the owners that registered it.
    map: Vec<Vec<(OwnerId, u32)>>,
    /// The same, only the owners whose literals are searched across joints.
    across: Vec<Vec<(OwnerId, u32)>>,
    /// Whether any owner's literals are searched across joints.
    walks_joints: bool,
    owners: usize,
}

#[derive(Debug)]
enum Search {
    Dfa(Box<LiteralDfa>),
    /// For literal sets whose DFA would be too large.
    Nfa(AhoCorasick),
}

impl Scanner {
    fn new(
        patterns: Vec<String>,
        map: Vec<Vec<(OwnerId, u32)>>,
        across: Vec<Vec<(OwnerId, u32)>>,
        owners: usize,
    ) -> Result<Self, String> {
        let search = match LiteralDfa::new(&patterns) {
            Some(dfa) => Search::Dfa(Box::new(dfa)),
            None => Search::Nfa(fallback_automaton(&patterns)?),
        };
        let walks_joints = across.iter().any(|a| !a.is_empty());
        Ok(Scanner {
            search,
            map,
            across,
            walks_joints,
            owners,
        })
    }

    /// Every hit in each of `texts`, per text then per owner, sorted by start. `joints`
    /// lists the texts that are joined detection views with joints, and where those are:
    /// their hits include the occurrences that read some joints as spaces and others as
    /// nothing (see [`LiteralDfa::for_each_joint_match`]).
    pub fn scan_all(&self, texts: &[TextSegment<'_>], joints: &[(usize, &[u32])]) -> BodyHits {
        if packable(texts, self.owners) {
            self.scan_all_packed(texts, joints)
        } else {
            self.scan_all_wide(texts, joints)
        }
    }

    /// `f(text, owners, start, end)` for every automaton match in `texts` (`owners`: the
    /// (owner, local) pairs of its pattern), and for every match across the `joints` of the
    /// texts listed there (`owners`: those whose literals are searched across joints).
    fn each_match(
        &self,
        texts: &[TextSegment<'_>],
        joints: &[(usize, &[u32])],
        mut f: impl FnMut(usize, &[(OwnerId, u32)], usize, usize),
    ) {
        match &self.search {
            Search::Dfa(d) => {
                d.for_each_match_in(
                    texts.len(),
                    |i| texts[i].text.as_bytes(),
                    |i, pattern, start, end| f(i, &self.map[pattern as usize], start, end),
                );
                for &(i, at) in joints.iter().filter(|_| self.walks_joints) {
                    if let Some(t) = texts.get(i) {
                        d.for_each_joint_match(t.text.as_bytes(), at, |pattern, start, end| {
                            f(i, &self.across[pattern as usize], start, end)
                        });
                    }
                }
            }
            // Literal sets too large for the DFA are not walked across joints (see
            // docs/configuration.md, "Disguised text").
            Search::Nfa(ac) => {
                for (i, t) in texts.iter().enumerate() {
                    for m in ac.find_overlapping_iter(t.text) {
                        f(i, &self.map[m.pattern().as_usize()], m.start(), m.end());
                    }
                }
            }
        }
    }

    /// [`Scanner::scan_all`] with each hit packed in one `u128` whose order is the hits'
    /// order: sorting plain integers costs a fraction of sorting tuples.
    fn scan_all_packed(&self, texts: &[TextSegment<'_>], joints: &[(usize, &[u32])]) -> BodyHits {
        self.collect(texts, joints, Packed::pack, |&p| (Packed::key(p), Packed::hit(p)))
    }

    /// [`Scanner::scan_all`] for bodies whose hits do not fit [`Packed`]: the same order,
    /// on tuples.
    fn scan_all_wide(&self, texts: &[TextSegment<'_>], joints: &[(usize, &[u32])]) -> BodyHits {
        self.collect(
            texts,
            joints,
            |text, owner, local, start, end| ((text as u32, owner as u32), start, end, local),
            |&(key, start, end, local)| (key, Hit { local, start, end }),
        )
    }

    /// Every hit of `texts` as a key made by `pack` (text, owner, local, start, end), whose
    /// order must be [`BodyHits`] order, sorted and read back by `unpack`.
    fn collect<K: Ord>(
        &self,
        texts: &[TextSegment<'_>],
        joints: &[(usize, &[u32])],
        pack: impl Fn(usize, OwnerId, u32, usize, usize) -> K,
        unpack: impl Fn(&K) -> ((u32, u32), Hit),
    ) -> BodyHits {
        let mut found: Vec<K> = Vec::with_capacity(FOUND_CAPACITY);
        self.each_match(texts, joints, |text, owners, start, end| {
            for &(owner, local) in owners {
                found.push(pack(text, owner, local, start, end));
            }
        });
        found.sort_unstable();
        // Two exact-size collections: cheaper than growing both through one `unzip`.
        BodyHits {
            keys: found.iter().map(|k| unpack(k).0).collect(),
            hits: found.iter().map(|k| unpack(k).1).collect(),
        }
    }

    /// Every hit in `text` (overlapping ones included), grouped by owner, sorted by start.
    pub fn scan(&self, text: &str) -> Vec<Vec<Hit>> {
        let mut by_owner: Vec<Vec<Hit>> = vec![Vec::new(); self.owners];
        let mut push = |pattern: usize, start: usize, end: usize| {
            for &(owner, local) in &self.map[pattern] {
                by_owner[owner].push(Hit { local, start, end });
            }
        };
        match &self.search {
            Search::Dfa(d) => d.for_each_match(text.as_bytes(), |p, s, e| push(p as usize, s, e)),
            Search::Nfa(ac) => {
                for m in ac.find_overlapping_iter(text) {
                    push(m.pattern().as_usize(), m.start(), m.end());
                }
            }
        }
        for hits in &mut by_owner {
            hits.sort_unstable_by_key(|h| (h.start, h.end, h.local));
        }
        by_owner
    }
}

/// Room for the hits of a typical body, so that collecting them does not grow the buffer
/// step by step.
const FOUND_CAPACITY: usize = 64;

/// A hit as one integer, most significant first: text (16 bits), owner (16), start (32),
/// end (32), local index (32). Integer order is [`BodyHits`] order.
struct Packed;

impl Packed {
    #[inline]
    fn pack(text: usize, owner: OwnerId, local: u32, start: usize, end: usize) -> u128 {
        (text as u128) << 112 | (owner as u128) << 96 | (start as u128) << 64 | (end as u128) << 32 | u128::from(local)
    }

    #[inline]
    fn key(p: u128) -> (u32, u32) {
        ((p >> 112) as u32, (p >> 96) as u32 & 0xffff)
    }

    #[inline]
    fn hit(p: u128) -> Hit {
        Hit {
            local: p as u32,
            start: (p >> 64) as u32 as usize,
            end: (p >> 32) as u32 as usize,
        }
    }
}

/// Whether every hit of `texts` fits [`Packed`]: at most 2^16 texts and owners, no text
/// longer than 4 GiB.
fn packable(texts: &[TextSegment<'_>], owners: usize) -> bool {
    const MAX: usize = 1 << 16;
    texts.len() <= MAX && owners <= MAX && texts.iter().all(|t| u32::try_from(t.text.len()).is_ok())
}

/// Every hit in a body's texts, in one buffer: grouped by (text, owner), sorted by start
/// (then end and local index) within a group.
#[derive(Debug, Default)]
pub struct BodyHits {
    /// (text, owner) of each hit of `hits`, in the same order.
    keys: Vec<(u32, u32)>,
    hits: Vec<Hit>,
}

impl BodyHits {
    /// Hits of `owner` in text `text`, sorted by start.
    pub fn get(&self, text: usize, owner: OwnerId) -> &[Hit] {
        let (Ok(t), Ok(o)) = (u32::try_from(text), u32::try_from(owner)) else {
            return &[];
        };
        let key = (t, o);
        let lo = self.keys.partition_point(|k| *k < key);
        let hi = lo + self.keys[lo..].partition_point(|k| *k == key);
        &self.hits[lo..hi]
    }
}

/// Hits of every segment of the body under evaluation, computed on first use.
#[derive(Debug)]
pub struct HitCache<'a> {
    scanner: Option<&'a Scanner>,
    texts: &'a [TextSegment<'a>],
    /// The texts that are joined views with joints, and where those are.
    joints: Vec<(usize, &'a [u32])>,
    cell: OnceCell<BodyHits>,
}

impl<'a> HitCache<'a> {
    pub fn new(scanner: Option<&'a Scanner>, texts: &'a [TextSegment<'a>]) -> Self {
        HitCache {
            scanner,
            texts,
            joints: Vec::new(),
            cell: OnceCell::new(),
        }
    }

    /// The same, for texts that are the joined detection views `views`: their hits include
    /// the occurrences that read some of a view's joints as spaces and others as nothing.
    pub fn joined(scanner: Option<&'a Scanner>, texts: &'a [TextSegment<'a>], views: &'a [DetectionView<'_>]) -> Self {
        HitCache {
            joints: views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.has_joint())
                .map(|(i, v)| (i, v.joints()))
                .collect(),
            ..HitCache::new(scanner, texts)
        }
    }

    /// Hits of `owner` in segment `segment`, sorted by start.
    pub fn get(&self, segment: usize, owner: OwnerId) -> &[Hit] {
        self.cell
            .get_or_init(|| match self.scanner {
                Some(s) => s.scan_all(self.texts, &self.joints),
                None => BodyHits::default(),
            })
            .get(segment, owner)
    }
}

/// Whole-word hits, leftmost-longest, non-overlapping (the semantics of blocked terms).
pub fn whole_words(text: &str, hits: &[Hit]) -> Vec<Hit> {
    let mut cands: Vec<Hit> = hits
        .iter()
        .copied()
        .filter(|h| crate::text::on_word_boundaries(text, &h.range()))
        .collect();
    cands.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut out: Vec<Hit> = Vec::with_capacity(cands.len());
    for h in cands {
        if out.last().is_none_or(|l| h.start >= l.end) {
            out.push(h);
        }
    }
    out
}

/// A regex searched only where one of its literal prefixes occurs.
#[derive(Debug, Clone)]
pub struct LiteralRegex {
    re: MetaRegex,
    /// Lower-cased prefixes every match starts with; `None` = search the whole text.
    prefixes: Option<Vec<String>>,
}

/// Shortest prefix literal worth anchoring on; shorter ones occur everywhere.
const MIN_PREFIX: usize = 3;

impl LiteralRegex {
    /// Compiles `pattern` (byte-oriented and ASCII-only classes when `unicode` is false).
    pub fn new(pattern: &str, case_insensitive: bool, unicode: bool) -> Result<Self, String> {
        let cfg = syntax::Config::new()
            .case_insensitive(case_insensitive)
            .unicode(unicode)
            .utf8(unicode);
        let re = MetaRegex::builder()
            .syntax(cfg)
            .configure(MetaRegex::config().nfa_size_limit(Some(crate::builtins::REGEX_SIZE_LIMIT)))
            .build(pattern)
            .map_err(|e| e.to_string())?;
        Ok(LiteralRegex {
            re,
            prefixes: prefixes(pattern, case_insensitive, unicode),
        })
    }

    pub fn prefixes(&self) -> Option<&[String]> {
        self.prefixes.as_deref()
    }

    /// Whether the regex is searched over whole texts (it has no literal prefixes); one
    /// with prefixes can only match where the scan found one of them.
    pub fn full_scan(&self) -> bool {
        self.prefixes.is_none()
    }

    /// Matches in `text`: anchored at each hit when the regex has prefixes, else a full
    /// search. Overlapping matches are dropped in favour of the earlier one.
    pub fn find(&self, text: &str, hits: &[Hit], out: &mut Vec<Range<usize>>) {
        let first = out.len();
        if self.prefixes.is_none() {
            out.extend(self.re.find_iter(text).filter(|m| !m.is_empty()).map(|m| m.range()));
            return;
        }
        let mut starts: Vec<usize> = hits.iter().map(|h| h.start).collect();
        starts.sort_unstable();
        starts.dedup();
        let mut last_end = 0;
        for s in starts {
            if s < last_end {
                continue;
            }
            let input = Input::new(text).range(s..).anchored(Anchored::Yes);
            if let Some(m) = self.re.search(&input).filter(|m| !m.is_empty()) {
                last_end = m.end();
                out.push(m.range());
            }
        }
        debug_assert!(out[first..].windows(2).all(|w| w[0].end <= w[1].start));
    }

    /// Whether the regex matches anywhere in `text`, given the hits of its prefixes.
    pub fn is_match(&self, text: &str, hits: &[Hit]) -> bool {
        match &self.prefixes {
            None => self.re.is_match(text),
            Some(_) => hits.iter().any(|h| {
                self.re
                    .is_match(Input::new(text).range(h.start..).anchored(Anchored::Yes))
            }),
        }
    }

    /// Whether the regex matches within `range` of `text` (look-around sees past it).
    pub fn is_match_in(&self, text: &str, range: Range<usize>) -> bool {
        self.re.is_match(Input::new(text).range(range))
    }

    /// Whether the regex matches in `text` (a full search, for texts the scanner did not see).
    pub fn is_match_anywhere(&self, text: &str) -> bool {
        self.re.is_match(text)
    }
}

/// The literal prefixes every match of `pattern` starts with, lower-cased and deduplicated,
/// when there is a small set of them each at least `MIN_PREFIX` bytes long.
fn prefixes(pattern: &str, case_insensitive: bool, unicode: bool) -> Option<Vec<String>> {
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(case_insensitive)
        .unicode(unicode)
        .utf8(unicode)
        .build()
        .parse(pattern)
        .ok()?;
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix)
        .limit_total(4096)
        .limit_class(16)
        .limit_literal_len(32);
    let seq = ex.extract(&hir);
    let lits = seq.literals()?;
    let mut out: Vec<String> = Vec::new();
    for l in lits {
        let s = String::from_utf8(l.as_bytes().to_vec()).ok()?.to_ascii_lowercase();
        if s.len() < MIN_PREFIX {
            return None;
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    (!out.is_empty() && out.len() <= 512).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_extracted_or_refused() {
        let p = |s: &str, ci: bool| prefixes(s, ci, true);
        assert_eq!(p("AKIA[0-9A-Z]{16}", false), Some(vec!["akia".to_owned()]));
        assert_eq!(
            p("(?:SECRET|TOP SECRET)//[A-Z]+", false),
            Some(vec!["secret//".to_owned(), "top secret//".to_owned()])
        );
        assert_eq!(p("codename[:\\s]+[a-z]+", true).map(|v| v.len()), Some(1));
        assert_eq!(p(r"\d{3}-\d{2}-\d{4}", false), None, "too many prefixes");
        assert_eq!(p(".*secret", false), None, "no prefix");
        assert_eq!(p("ab+c", false), None, "prefix too short");
    }

    /// Each of `texts` as a user message's segment.
    fn user_segments<S: AsRef<str>>(texts: &[S]) -> Vec<TextSegment<'_>> {
        texts
            .iter()
            .map(|t| TextSegment {
                role: crate::exchange::Role::User,
                path: Vec::new(),
                text: t.as_ref(),
            })
            .collect()
    }

    #[test]
    fn matches_across_joints_reach_only_the_owners_that_ask_for_them() {
        let mut plan = ScanPlan::default();
        let (terms, prefixes) = (plan.owner(), plan.owner());
        plan.across_joints(terms);
        plan.add(terms, 0, "project falcon");
        plan.add(prefixes, 0, "project falcon");
        let scanners = plan.build().expect("builds");
        let s = scanners.for_phase(Phase::Input).expect("scanner");
        // `pro<ZWSP>ject<ZWSP>falcon`, joined: joints after `pro` and `project`.
        let texts = user_segments(&["projectfalcon"]);
        let joints: [u32; 2] = [3, 7];
        let hits = s.scan_all(&texts, &[(0, &joints)]);
        assert_eq!(
            hits.get(0, terms),
            &[Hit {
                local: 0,
                start: 0,
                end: 13
            }]
        );
        assert!(hits.get(0, prefixes).is_empty());
        // Without joints, neither.
        assert!(s.scan_all(&texts, &[]).get(0, terms).is_empty());
    }

    #[test]
    fn packed_and_wide_collections_agree() {
        let mut plan = ScanPlan::default();
        let owners: Vec<OwnerId> = (0..3).map(|_| plan.owner()).collect();
        let words = ["falcon", "con", "on", "project falcon", "the", "ALL", "n"];
        for (i, w) in words.iter().enumerate() {
            plan.add(owners[i % 3], i as u32, w);
            plan.add(owners[(i + 1) % 3], 100 + i as u32, w);
        }
        let scanners = plan.build().expect("builds");
        let s = scanners.for_phase(Phase::Input).expect("scanner");
        let bodies = [
            "Project Falcon: the con is on, all of it, ALL the time.",
            "",
            "nnnn on the falcon falcon con",
            "no literal here? yes: n",
        ];
        let texts = user_segments(&bodies);
        assert!(packable(&texts, 3));
        let (packed, wide) = (s.scan_all_packed(&texts, &[]), s.scan_all_wide(&texts, &[]));
        assert!(packed.hits.len() > 40, "{}", packed.hits.len());
        assert_eq!(packed.keys, wide.keys);
        assert_eq!(packed.hits, wide.hits);
        assert_eq!(s.scan_all(&texts, &[]).hits, wide.hits);
        for (i, body) in bodies.iter().enumerate() {
            for &o in &owners {
                let got = packed.get(i, o);
                assert!(got.windows(2).all(|w| (w[0].start, w[0].end) <= (w[1].start, w[1].end)));
                assert!(got.iter().all(|h| h.end <= body.len() && h.start < h.end));
            }
        }
        let p = Packed::pack(65_535, 65_535, u32::MAX, u32::MAX as usize - 1, u32::MAX as usize);
        assert_eq!(Packed::key(p), (65_535, 65_535));
        assert_eq!(
            Packed::hit(p),
            Hit {
                local: u32::MAX,
                start: u32::MAX as usize - 1,
                end: u32::MAX as usize
            }
        );
        assert!(!packable(&texts, 1 << 17));
    }

    #[test]
    fn one_pass_serves_several_owners() {
        let mut plan = ScanPlan::default();
        let a = plan.owner();
        let b = plan.owner();
        plan.add(a, 0, "falcon");
        plan.add(b, 7, "FALCON");
        plan.add(b, 8, "con");
        let s = plan.build().expect("builds");
        let hits = s.for_phase(Phase::Input).expect("scanner").scan("Project Falcon");
        assert_eq!(
            hits[a],
            vec![Hit {
                local: 0,
                start: 8,
                end: 14
            }]
        );
        assert_eq!(hits[b].len(), 2, "overlapping hits are all reported: {:?}", hits[b]);
        assert!(s.for_phase(Phase::Tool).is_none(), "the tool phase has no text to scan");
    }

    #[test]
    fn a_body_hit_cache_gives_each_text_what_a_scan_of_it_gives() {
        let mut plan = ScanPlan::default();
        let owners: Vec<OwnerId> = (0..3).map(|_| plan.owner()).collect();
        for (i, w) in ["he", "she", "his", "hers", "falcon", "con", "a"].iter().enumerate() {
            plan.add(owners[i % 3], i as u32, w);
            plan.add(owners[(i + 1) % 3], 100 + i as u32, w);
        }
        let s = plan.build().expect("builds");
        let scanner = s.for_phase(Phase::Input).expect("scanner");
        let words = ["she", "Falcon", " ", "hers", "a", "xyz", "his", "con"];
        let texts: Vec<String> = (0..12)
            .map(|i| (0..i * 7).map(|j| words[(i + j * j) % words.len()]).collect())
            .collect();
        let segments = user_segments(&texts);
        let cache = HitCache::new(Some(scanner), &segments);
        let mut total = 0;
        for (i, t) in texts.iter().enumerate() {
            let alone = scanner.scan(t);
            for &o in &owners {
                assert_eq!(cache.get(i, o), alone[o].as_slice(), "text {i}, owner {o}");
                total += alone[o].len();
            }
            assert!(cache.get(i, 99).is_empty(), "an unknown owner has no hits");
        }
        assert!(cache.get(99, owners[0]).is_empty(), "an unknown text has no hits");
        assert!(total > 100, "{total} hits");
    }

    #[test]
    fn anchored_search_finds_every_match() {
        let r = LiteralRegex::new("AKIA[0-9A-Z]{16}", false, true).expect("compiles");
        let text = "x AKIAIOSFODNN7EXAMPLE y akiaIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLE";
        let hits: Vec<Hit> = text
            .to_ascii_lowercase()
            .match_indices("akia")
            .map(|(i, _)| Hit {
                local: 0,
                start: i,
                end: i + 4,
            })
            .collect();
        let mut out = Vec::new();
        r.find(text, &hits, &mut out);
        assert_eq!(out, vec![2..22, 46..66]);
    }

    #[test]
    fn whole_words_picks_leftmost_longest() {
        let text = "the project falcon plan";
        let hits = [
            Hit {
                local: 0,
                start: 4,
                end: 11,
            },
            Hit {
                local: 1,
                start: 4,
                end: 18,
            },
            Hit {
                local: 2,
                start: 12,
                end: 18,
            },
        ];
        assert_eq!(
            whole_words(text, &hits),
            vec![Hit {
                local: 1,
                start: 4,
                end: 18
            }]
        );
    }
}
