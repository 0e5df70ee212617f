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
        if !needs_folding(source.as_bytes()) {
            return DetectionView {
                text: Cow::Borrowed(source),
                map: None,
            };
        }
        let (text, map) = fold(source);
        DetectionView {
            text: Cow::Owned(text),
            map: Some(map),
        }
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

/// The view of a literal (a blocked term, an entity name): folded like the texts it is
/// searched in.
pub fn fold_literal(literal: &str) -> Cow<'_, str> {
    DetectionView::of(literal).text
}

/// Whether `bytes` hold anything the view changes: a non-ASCII byte, whitespace other
/// than a single space.
fn needs_folding(bytes: &[u8]) -> bool {
    let mut prev_space = false;
    for &b in bytes {
        if b >= 0x80 || matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            return true;
        }
        let space = b == b' ';
        if space && prev_space {
            return true;
        }
        prev_space = space;
    }
    false
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
fn char_fold(c: char) -> CharFold {
    if c.is_whitespace() {
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

/// Builds the view of `source` and its offset map.
fn fold(source: &str) -> (String, OffsetMap) {
    let mut out = String::with_capacity(source.len());
    let mut map = OffsetMap::default();
    let mut space = false;
    let mut chars = source.char_indices().peekable();
    let mut cluster = String::new();
    while let Some((start, c)) = chars.next() {
        // A cluster: a starter and the combining marks after it, normalised together.
        let mut end = start + c.len_utf8();
        if c.is_ascii() && chars.peek().is_none_or(|(_, n)| n.is_ascii()) {
            if c.is_ascii_whitespace() {
                fold_space(&mut out, &mut map, &mut space, start..end, c as u8);
            } else {
                out.push(c);
                space = false;
            }
            continue;
        }
        cluster.clear();
        cluster.push(c);
        while let Some(&(i, n)) = chars.peek() {
            if canonical_combining_class(n) == 0 {
                break;
            }
            cluster.push(n);
            end = i + n.len_utf8();
            chars.next();
        }
        let view_start = out.len();
        for d in cluster.nfkc() {
            match char_fold(d) {
                CharFold::Drop => {}
                CharFold::Ascii(b' ') => {
                    if !space {
                        out.push(' ');
                    }
                    space = true;
                }
                CharFold::Ascii(b) => {
                    out.push(char::from(b));
                    space = false;
                }
                CharFold::Keep => {
                    out.push(d);
                    space = false;
                }
            }
        }
        if out.len() - view_start != end - start || out[view_start..] != source[start..end] {
            push_piece(&mut map, view_start..out.len(), start..end);
        }
    }
    (out, map)
}

/// An ASCII whitespace byte: a space unless the view already ends in one.
fn fold_space(out: &mut String, map: &mut OffsetMap, space: &mut bool, src: Range<usize>, byte: u8) {
    let view_start = out.len();
    if !*space {
        out.push(' ');
    }
    *space = true;
    if out.len() == view_start || byte != b' ' {
        push_piece(map, view_start..out.len(), src);
    }
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
