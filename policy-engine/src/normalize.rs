//! The detection view: text as the term and pattern detectors see it, so that disguised
//! text matches what plain text matches. Each character cluster is NFKC-normalised;
//! default-ignorable characters (zero-width spaces and joiners, soft hyphens, bidi
//! controls, variation selectors…) are dropped; letters that Unicode's confusables table
//! (UTS #39, through the `unicode-security` crate) gives a one-letter ASCII prototype are
//! folded to it (a Cyrillic `а` reads as `a`); and every run of whitespace, of any kind,
//! becomes one space.
//!
//! An `OffsetMap` leads each range of the view back to the source text, so redactions
//! rewrite the original at the right place (a range that starts or ends inside a changed
//! cluster widens to the whole cluster). Text that needs none of this (ASCII with single
//! spaces) is its own view, borrowed and without a map.
//!
//! A character dropped between two word characters is a *joint*: it may split a word
//! (`pro<ZWSP>ject`) or stand for the space between two (`developer<ZWSP>mode`), and
//! nothing in the text says which. The view joins the two sides; a text with a joint also
//! has a *spaced* view (`DetectionView::spaced`) where each joint is one space, and the
//! chain reads both (see `chain::run_policies`). The view records where its joints are,
//! so the literal scan can also read each joint of the joined view either way on its own
//! (see `scan::automaton::LiteralDfa::for_each_joint_match`): a phrase hidden by splitting
//! one word and joining two others matches neither whole reading.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

/// A text as the detectors see it.
#[derive(Debug, Clone)]
pub struct DetectionView<'a> {
    pub text: Cow<'a, str>,
    /// `None` when the view is the source itself.
    map: Option<OffsetMap>,
    /// Where characters were dropped between two word characters (see the module docs), as
    /// view offsets, ascending: in the joined view the point between the two sides, in the
    /// spaced view the space that stands for the joint. Empty for most texts.
    joints: Vec<u32>,
}

/// Where the changed clusters of a view came from; everything between them maps one to one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    /// (view start, view end, source start, source end) of each changed cluster, in order.
    pieces: Vec<(u32, u32, u32, u32)>,
}

impl OffsetMap {
    /// The source position of view position `p` as the start of a range.
    fn start(&self, p: usize) -> usize {
        let k = self.pieces.partition_point(|x| x.0 as usize <= p);
        let Some(&(vs, ve, ss, se)) = k.checked_sub(1).map(|k| &self.pieces[k]) else {
            return p;
        };
        let (vs, ve, ss, se) = (vs as usize, ve as usize, ss as usize, se as usize);
        if p < ve {
            debug_assert!(p >= vs);
            ss
        } else {
            se + (p - ve)
        }
    }

    /// The source position of view position `p` as the (exclusive) end of a range.
    fn end(&self, p: usize) -> usize {
        let k = self.pieces.partition_point(|x| (x.0 as usize) < p);
        let Some(&(_, ve, _, se)) = k.checked_sub(1).map(|k| &self.pieces[k]) else {
            return p;
        };
        let (ve, se) = (ve as usize, se as usize);
        if p <= ve { se } else { se + (p - ve) }
    }
}

impl<'a> DetectionView<'a> {
    /// The view of `source`.
    pub fn of(source: &'a str) -> Self {
        Self::folded(source, Joints::Join)
    }

    /// The other reading of a text with a joint: each joint is one space (`developer mode`
    /// for `developer<ZWSP>mode`). The same as `of` for a text without one.
    pub fn spaced(source: &'a str) -> Self {
        Self::folded(source, Joints::Space)
    }

    /// A third reading of a text with joints: joint `k` (in order) is one space when
    /// `spaces[k]`, else nothing (see `scan::joints`, which chooses them).
    pub fn resolved(source: &'a str, spaces: &[bool]) -> Self {
        Self::folded(source, Joints::Chosen(spaces))
    }

    fn folded(source: &'a str, joints: Joints<'_>) -> Self {
        match fold(source, joints) {
            None => DetectionView {
                text: Cow::Borrowed(source),
                map: None,
                joints: Vec::new(),
            },
            Some(f) => DetectionView {
                text: Cow::Owned(f.text),
                map: Some(f.map),
                joints: f.joints,
            },
        }
    }

    /// Whether the text has a joint, and so a second reading (`spaced`).
    pub fn has_joint(&self) -> bool {
        !self.joints.is_empty()
    }

    /// Where the view's joints are (view offsets, ascending; see the field's docs).
    pub fn joints(&self) -> &[u32] {
        &self.joints
    }

    /// The range of the source that view range `r` came from.
    pub fn to_source(&self, r: Range<usize>) -> Range<usize> {
        match &self.map {
            None => r,
            Some(m) => m.start(r.start)..m.end(r.end).max(m.start(r.start)),
        }
    }

    /// Whether the view differs from its source.
    pub fn is_folded(&self) -> bool {
        self.map.is_some()
    }
}

/// Where the tail of `s` that reads as at least `view_bytes` bytes of its detection view
/// starts: characters the view drops count nothing and a run of whitespace counts one
/// byte, so padding a term with them does not push its start out of the tail. Looks back
/// at most `max_bytes` bytes of `s`; always a char boundary.
pub fn view_tail_start(s: &str, view_bytes: usize, max_bytes: usize) -> usize {
    // The common case: a tail that is its own view (ASCII, single spaces).
    if view_bytes <= max_bytes
        && let Some(plain) = s.len().checked_sub(view_bytes)
        && next_change(&s.as_bytes()[plain..], 0) == view_bytes
    {
        return plain;
    }
    let floor = s.len().saturating_sub(max_bytes);
    let (mut seen, mut start, mut after_space) = (0usize, s.len(), false);
    for (i, c) in s.char_indices().rev() {
        if seen >= view_bytes || i < floor {
            break;
        }
        let space = reads_as_space(c);
        seen += match c {
            _ if space => usize::from(!after_space),
            // Tag characters and variation selectors of the supplementary planes.
            '\u{E0000}'..='\u{E0FFF}' => 0,
            _ if c.is_ascii() || u32::from(c) >= 0x1_0000 => c.len_utf8(),
            _ if char_fold(c) == CharFold::Drop => 0,
            _ => c.len_utf8(),
        };
        after_space = space;
        start = i;
    }
    start
}

/// The view of a literal (a blocked term, an entity name): folded like the texts it is
/// searched in.
pub fn fold_literal(literal: &str) -> Cow<'_, str> {
    DetectionView::of(literal).text
}

/// The first position from `from` on where the view may differ from the source: a
/// non-ASCII byte, a control byte (tabs, newlines…), or the first of two spaces. Eight
/// bytes at a time: this runs over every text the policies read.
fn next_change(bytes: &[u8], from: usize) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let mut i = from;
    // 0x80 when the byte before `i` (the last of the previous word) is a space.
    let mut space_before = 0u64;
    for chunk in bytes.get(from..).unwrap_or_default().chunks_exact(8) {
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
        // Bytes below 0x20 (the lowest flag is exact; borrows only flag bytes above it).
        let control = w.wrapping_sub(SPACES) & !w & HIGH;
        // Exactly the bytes equal to a space.
        let x = w ^ SPACES;
        let space = !(((x & LOW7) + LOW7) | x | LOW7);
        // Two spaces across the word boundary: the previous word's last byte is the first.
        if space_before & space != 0 {
            return i - 1;
        }
        let double = space & (space >> 8);
        let flags = (w & HIGH) | control | double;
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        space_before = space >> 56;
        i += 8;
    }
    if space_before != 0 && bytes.get(i) == Some(&b' ') {
        return i - 1;
    }
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..0x80).contains(&b) || (b == b' ' && bytes.get(i + 1) == Some(&b' ')) {
            return i;
        }
        i += 1;
    }
    i
}

/// What a character becomes in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharFold {
    Keep,
    Drop,
    Ascii(u8),
}

/// The fold of one character after NFKC: dropped when default-ignorable (its skeleton is
/// empty), its ASCII prototype when the confusables table gives one, else itself.
/// Whether the view reads `c` as (part of a run of) whitespace. The Braille blank renders
/// as a space but is a symbol, not whitespace.
fn reads_as_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{2800}'
}

fn char_fold(c: char) -> CharFold {
    if reads_as_space(c) {
        return CharFold::Ascii(b' ');
    }
    if c.is_ascii() {
        return CharFold::Ascii(c as u8);
    }
    let bmp = u32::from(c) < 0x1_0000;
    if bmp {
        let table = bmp_table();
        return decode(table[c as usize]);
    }
    compute_fold(c)
}

fn decode(v: u8) -> CharFold {
    match v {
        0 => CharFold::Keep,
        1 => CharFold::Drop,
        b => CharFold::Ascii(b),
    }
}

fn compute_fold(c: char) -> CharFold {
    let mut buf = [0u8; 4];
    let mut skeleton = unicode_security::skeleton(c.encode_utf8(&mut buf));
    match (skeleton.next(), skeleton.next()) {
        (None, _) => CharFold::Drop,
        (Some(p), None) if p.is_ascii_graphic() => CharFold::Ascii(p as u8),
        _ => CharFold::Keep,
    }
}

/// The fold of every BMP character, computed once per process on first use (a few
/// milliseconds): 0 keep, 1 drop, else the ASCII byte.
fn bmp_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0u32..0x1_0000)
            .map(|u| match char::from_u32(u) {
                Some(c) if !c.is_ascii() => match compute_fold(c) {
                    CharFold::Keep => 0,
                    CharFold::Drop => 1,
                    CharFold::Ascii(b) => b,
                },
                _ => 0,
            })
            .collect()
    })
}

/// Longest cluster normalised as one, in bytes.
const MAX_CLUSTER: usize = 64;

/// Builds the confusables table now (a few milliseconds, once per process), so no request
/// pays for it: called when a policy compiles.
pub fn prepare() {
    bmp_table();
}

/// What a view makes of a character dropped between two word characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joints<'c> {
    /// Nothing: the two sides are one word.
    Join,
    /// One space: the two sides are two words.
    Space,
    /// Joint `k` (in order) is one space when `chosen[k]`, else nothing.
    Chosen(&'c [bool]),
}

impl Joints<'_> {
    /// Whether joint `k` (in order) reads as a space.
    fn spaces(&self, k: usize) -> bool {
        match self {
            Joints::Join => false,
            Joints::Space => true,
            Joints::Chosen(c) => c.get(k).copied().unwrap_or(false),
        }
    }
}

/// A folded text: the view, its offset map, and where its joints are.
struct Folded {
    text: String,
    map: OffsetMap,
    joints: Vec<u32>,
}

/// The view of `source` and its offset map; `None` when the view is the source itself.
/// One pass: unchanged runs are copied whole, only what changes is looked at closely.
fn fold(source: &str, joints: Joints<'_>) -> Option<Folded> {
    let bytes = source.as_bytes();
    let mut out = String::new();
    let mut map = OffsetMap::default();
    let mut cluster = String::new();
    let mut joint_at: Vec<u32> = Vec::new();
    // Bytes from `run` to `i` are unchanged and not yet copied.
    let (mut i, mut run) = (0, 0);
    loop {
        i = next_change(bytes, i);
        if i >= bytes.len() {
            break;
        }
        let b = bytes[i];
        // A combining mark joins the ASCII letter before it (`e` + U+0301 is `é`).
        if b >= 0x80
            && i > run
            && source[i..]
                .chars()
                .next()
                .is_some_and(|c| canonical_combining_class(c) != 0)
        {
            i -= 1;
        }
        if out.capacity() == 0 {
            out.reserve(source.len());
        }
        out.push_str(&source[run..i]);
        let view_start = out.len();
        let end = if bytes[i] < 0x80 && bytes[i].is_ascii_whitespace() {
            // A run of ASCII whitespace: one space, unless the view already ends in one.
            let end = i + bytes[i..].iter().take_while(|c| c.is_ascii_whitespace()).count();
            if !out.ends_with(' ') {
                out.push(' ');
            }
            end
        } else {
            let end = fold_cluster(source, i, &mut out, &mut cluster);
            // A cluster that vanished between two word characters is a joint.
            let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
            if out.len() == view_start && word(out.chars().next_back()) && word(source[end..].chars().next()) {
                // Several dropped characters in a row are one joint.
                if joint_at.last() != Some(&(view_start as u32)) {
                    if joints.spaces(joint_at.len()) {
                        out.push(' ');
                    }
                    joint_at.push(view_start as u32);
                }
            }
            end
        };
        if out[view_start..] != source[i..end] {
            push_piece(&mut map, view_start..out.len(), i..end);
        }
        (i, run) = (end, end);
    }
    if map.pieces.is_empty() {
        return None;
    }
    out.push_str(&source[run..]);
    Some(Folded {
        text: out,
        map,
        joints: joint_at,
    })
}

/// Folds the cluster of non-ASCII `source[at..]` (a character and the combining marks after
/// it, normalised together) into `out`; returns where the cluster ends.
fn fold_cluster(source: &str, at: usize, out: &mut String, cluster: &mut String) -> usize {
    cluster.clear();
    let mut end = at;
    for (k, c) in source[at..].char_indices() {
        // A run of marks longer than any real cluster ("zalgo" text) is cut into clusters
        // of bounded size: normalising one cluster sorts its marks.
        if k > 0 && (canonical_combining_class(c) == 0 || cluster.len() >= MAX_CLUSTER) {
            break;
        }
        cluster.push(c);
        end = at + k + c.len_utf8();
    }
    for d in cluster.nfkc() {
        match char_fold(d) {
            CharFold::Drop => {}
            CharFold::Ascii(b' ') => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            CharFold::Ascii(b) => out.push(char::from(b)),
            CharFold::Keep => out.push(d),
        }
    }
    end
}

/// Records a changed cluster, merging it into the previous one when they touch.
fn push_piece(map: &mut OffsetMap, view: Range<usize>, src: Range<usize>) {
    let (vs, ve, ss, se) = (view.start as u32, view.end as u32, src.start as u32, src.end as u32);
    if let Some(last) = map.pieces.last_mut()
        && last.1 == vs
        && last.3 == ss
    {
        last.1 = ve;
        last.3 = se;
        return;
    }
    map.pieces.push((vs, ve, ss, se));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(s: &str) -> String {
        DetectionView::of(s).text.into_owned()
    }

    #[test]
    fn disguises_fold_to_the_plain_text() {
        let cases = [
            ("project  falcon", "project falcon"),
            ("project\nfalcon", "project falcon"),
            ("project \t\r\n falcon", "project falcon"),
            ("project\u{a0}falcon", "project falcon"),
            ("project\u{3000}falcon", "project falcon"),
            ("project\u{2800}falcon", "project falcon"),
            ("pro\u{200b}ject falcon", "project falcon"),
            ("AKIA\u{200b}IOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("pro\u{ad}ject fal\u{200d}con\u{feff}", "project falcon"),
            ("ｐｒｏｊｅｃｔ ｆａｌｃｏｎ", "project falcon"),
            ("pr\u{43e}ject falcon", "project falcon"),
            ("\u{420}roject", "Project"),
            ("cafe\u{301}", "café"),
            ("ﬁle", "file"),
            ("𝐩𝐫𝐨𝐣𝐞𝐜𝐭", "project"),
        ];
        for (disguised, plain) in cases {
            assert_eq!(view(disguised), plain, "{disguised:?}");
        }
    }

    #[test]
    fn endless_combining_marks_fold_in_bounded_clusters() {
        let zalgo = format!("a{}b project\u{200b} falcon", "\u{301}\u{316}\u{35c}".repeat(50_000));
        let v = DetectionView::of(&zalgo);
        assert!(v.text.ends_with("b project falcon"), "{}", &v.text[v.text.len() - 20..]);
        let at = v.text.len() - "falcon".len();
        assert_eq!(&zalgo[v.to_source(at..v.text.len())], "falcon");
    }

    #[test]
    fn the_word_scan_finds_what_a_byte_scan_finds() {
        let naive = |b: &[u8], from: usize| {
            (from..b.len())
                .find(|&i| b[i] >= 0x80 || b[i] < 0x20 || (b[i] == b' ' && b.get(i + 1) == Some(&b' ')))
                .unwrap_or(b.len())
        };
        let alphabet: &[&[u8]] = &[
            b"a",
            b" ",
            b"  ",
            b"\n",
            b"\t",
            b"\x7f",
            b"~",
            b"\xc3\xa9",
            b"\x01",
            b"Z",
        ];
        let mut seed = 7u64;
        for _ in 0..3000 {
            let mut text = Vec::new();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 33) % 40;
            for k in 0..len {
                let pick = ((seed >> (k % 50)) as usize + k as usize * 7) % alphabet.len();
                // Mostly plain letters, so changes are sparse as in prose.
                text.extend_from_slice(if k % 3 == 0 { alphabet[pick] } else { b"x" });
            }
            for from in 0..=text.len() {
                assert_eq!(next_change(&text, from), naive(&text, from), "{text:?} from {from}");
            }
        }
    }

    #[test]
    fn a_character_dropped_between_word_characters_gives_a_second_reading() {
        let cases = [
            // (source, joined view, spaced view, has a joint)
            ("developer\u{200b}mode", "developermode", "developer mode", true),
            ("pro\u{200b}ject falcon", "project falcon", "pro ject falcon", true),
            ("x\u{200b}\u{200c}y", "xy", "x y", true),
            ("\u{420}\u{2060}\u{43e}", "Po", "P o", true),
            ("a\u{200b} b", "a b", "a b", false),
            ("a \u{200b}b", "a b", "a b", false),
            ("\u{200b}start end\u{200b}", "start end", "start end", false),
            ("ok.\u{200b}next", "ok.next", "ok.next", false),
            ("cafe\u{301} au lait", "café au lait", "café au lait", false),
        ];
        for (src, joined, spaced, joint) in cases {
            let v = DetectionView::of(src);
            assert_eq!((v.text.as_ref(), v.has_joint()), (joined, joint), "{src:?}");
            let s = DetectionView::spaced(src);
            assert_eq!(s.text, spaced, "{src:?}");
            // Every range of the spaced view leads back inside the source.
            for a in 0..=s.text.len() {
                let r = s.to_source(a..s.text.len());
                assert!(r.start <= r.end && r.end <= src.len(), "{src:?} {a}: {r:?}");
                assert!(
                    src.is_char_boundary(r.start) && src.is_char_boundary(r.end),
                    "{src:?} {a}: {r:?}"
                );
            }
        }
        let src = "say developer\u{200b}mode now";
        let s = DetectionView::spaced(src);
        let at = s.text.find("developer mode").expect("spaced");
        assert_eq!(
            &src[s.to_source(at..at + "developer mode".len())],
            "developer\u{200b}mode"
        );
        assert!(!DetectionView::of("plain text").has_joint());
    }

    #[test]
    fn a_view_tail_skips_what_the_view_drops_and_stops_at_its_bound() {
        assert_eq!(view_tail_start("abcdef", 3, 100), 3);
        assert_eq!(view_tail_start("ab", 3, 100), 0);
        let padded = format!("Project{}Falcon", "\u{200b}".repeat(200));
        let at = view_tail_start(&padded, 8, 10_000);
        assert!(padded[at..].starts_with("ct\u{200b}"), "{:?}", &padded[at..at + 4]);
        let spaced = format!("Project{}Falcon", " \n\t".repeat(200));
        assert!(spaced[view_tail_start(&spaced, 8, 10_000)..].starts_with("t \n\t"));
        // Never further back than the bound, and always on a char boundary.
        let at = view_tail_start(&padded, 1_000, 50);
        assert!(padded.len() - at <= 50 && padded.is_char_boundary(at), "{at}");
        assert_eq!(view_tail_start("", 5, 5), 0);
        assert_eq!(view_tail_start("héllo", 0, 5), 6);
    }

    #[test]
    fn plain_text_is_borrowed_and_other_scripts_keep_their_letters() {
        let v = DetectionView::of("plain ascii, single spaces.");
        assert!(matches!(v.text, Cow::Borrowed(_)) && !v.is_folded());
        assert_eq!(view("日本語のテキスト"), "日本語のテキスト");
        assert_eq!(view("Grüße aus Köln"), "Grüße aus Köln");
    }

    #[test]
    fn view_ranges_lead_back_to_the_source() {
        let src = "key: AKIA\u{200b}IOSFODNN7EXAMPLE,\n\n  next ｆａｌｃｏｎ done";
        let v = DetectionView::of(src);
        let find = |needle: &str| {
            let at = v.text.find(needle).unwrap_or_else(|| panic!("{needle} in {}", v.text));
            &src[v.to_source(at..at + needle.len())]
        };
        assert_eq!(find("AKIAIOSFODNN7EXAMPLE"), "AKIA\u{200b}IOSFODNN7EXAMPLE");
        assert_eq!(find("key"), "key");
        assert_eq!(find(", next"), ",\n\n  next");
        assert_eq!(find("falcon"), "ｆａｌｃｏｎ");
        assert_eq!(find("done"), "done");
        assert_eq!(find("next falcon"), "next ｆａｌｃｏｎ");
        // A range inside a changed cluster widens to the whole cluster.
        let v = DetectionView::of("ﬁle");
        assert_eq!(v.to_source(1..3), 0..4, "\"il\" covers the whole ligature and the l");
        assert_eq!(v.to_source(0..1), 0..3);
    }

    #[test]
    fn every_view_range_maps_inside_the_source_on_char_boundaries() {
        let src = "a\u{200b}b  c\u{301}d\n\u{ad}ｅ𝐟 g\u{a0}\u{a0}h";
        let v = DetectionView::of(src);
        for s in 0..=v.text.len() {
            for e in s..=v.text.len() {
                let r = v.to_source(s..e);
                assert!(r.start <= r.end && r.end <= src.len(), "{s}..{e} -> {r:?}");
                assert!(
                    src.is_char_boundary(r.start) && src.is_char_boundary(r.end),
                    "{s}..{e} -> {r:?}"
                );
            }
        }
    }
}
