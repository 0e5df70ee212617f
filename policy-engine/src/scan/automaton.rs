//! A case-insensitive literal-set automaton (Aho-Corasick, fully determinized), built in
//! time linear in the literals times the alphabet, and searched with several independent
//! streams interleaved so the CPU overlaps their table lookups: a DFA walk is bound by the
//! latency of one load per byte, and four walks in one loop hide most of it.

use std::collections::VecDeque;

/// Largest transition table accepted (entries); bigger sets use a slower fallback.
pub const MAX_TABLE: usize = 32 * 1024 * 1024;
/// Lanes walked in lockstep.
const STREAMS: usize = 4;
/// Shortest piece a body's texts are cut into for the lanes.
const PIECE_MIN: usize = 64;

/// Where a lane stands in its quarter `lo..hi` of the texts laid end to end: the next text
/// to cut a piece from, and where that text starts.
#[derive(Debug)]
struct Cursor {
    lo: usize,
    hi: usize,
    text: usize,
    at: usize,
}

impl Cursor {
    /// The part of the next text that lies in the lane's quarter, starting `warm` bytes
    /// early when it starts inside the text. Kept out of line: it runs once per piece, away
    /// from the lockstep loop.
    #[inline(never)]
    fn next_piece<'h>(
        &mut self,
        count: usize,
        hay: &impl Fn(usize) -> &'h [u8],
        state: u32,
        warm: usize,
    ) -> Option<Lane> {
        while self.text < count && self.at < self.hi {
            let (i, at) = (self.text, self.at);
            let len = hay(i).len();
            self.text += 1;
            self.at += len;
            if at + len > self.lo {
                let region = self.lo.max(at) - at;
                return Some(Lane {
                    text: i,
                    state,
                    pos: region.saturating_sub(warm),
                    region,
                    end: self.hi.min(at + len) - at,
                });
            }
        }
        None
    }
}

/// One lane's piece of a text: `pos` is the next byte, matches count from `region` on.
#[derive(Debug, Clone, Copy)]
struct Lane {
    text: usize,
    state: u32,
    pos: usize,
    region: usize,
    end: usize,
}

/// Where the lanes' parts of `total` bytes start and end (`bounds[k]..bounds[k + 1]`).
/// Lanes after the first walk `warm` bytes before their part, so the first lane's part is
/// that much longer: all four then walk about as many bytes and end together, and no
/// lane is left to finish alone, one latency-bound load per byte.
fn lane_bounds(total: usize, warm: usize) -> [usize; STREAMS + 1] {
    let lanes = STREAMS - 1;
    let plain = total.div_ceil(STREAMS).max(PIECE_MIN);
    let w = warm.min(plain / 2);
    let walked = (total + lanes * w).div_ceil(STREAMS).max(PIECE_MIN);
    std::array::from_fn(|k| match k {
        0 => 0,
        STREAMS => total,
        _ => (k * walked - (k - 1) * w).min(total),
    })
}

#[derive(Debug, Clone)]
pub struct LiteralDfa {
    /// Byte → equivalence class; ASCII letters share a class with their other case.
    classes: [u16; 256],
    stride: usize,
    /// `state + class` → next state. States are premultiplied ids: a non-match state's
    /// row starts at a multiple of `stride` below `first_match`, a match state's at
    /// `first_match` plus a multiple of `stride`. The table's length is a power of two
    /// (`mask + 1`; the rows past the last are never read).
    trans: Vec<u32>,
    /// `trans.len() - 1`, kept apart: slicing the table to `..=mask` tells the compiler its
    /// exact length, which a length computed at the call does not (it may be zero).
    mask: usize,
    start: u32,
    /// A power of two: every non-match state is below it and every match state at or
    /// above it, so "is any of these states a match" is one OR and one comparison.
    first_match: u32,
    /// Per match state (in id order from `first_match`): its range in `outputs`.
    out_ranges: Vec<(u32, u32)>,
    /// Pattern ids ending at a match state, own patterns first then suffix patterns.
    outputs: Vec<u32>,
    /// Byte length of each pattern.
    lens: Vec<u32>,
    max_len: usize,
    /// Every pattern's bytes, end to end (pattern `p` ends at `ends[p]`): a match found
    /// across joints is checked, and its start found, against its pattern's bytes.
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

struct Node {
    /// (class, child) sorted by class.
    next: Vec<(u16, u32)>,
    own: Vec<u32>,
}

/// Byte → class: one class per distinct byte of the patterns (ASCII letters together with
/// their other case), class 0 for every other byte. Gives the table and the class count.
fn byte_classes(patterns: &[String]) -> ([u16; 256], usize) {
    let mut classes = [0u16; 256];
    let mut n_classes: u16 = 1;
    for p in patterns {
        for &b in p.as_bytes() {
            let b = b.to_ascii_lowercase();
            if classes[usize::from(b)] == 0 {
                classes[usize::from(b)] = n_classes;
                if b.is_ascii_lowercase() {
                    classes[usize::from(b.to_ascii_uppercase())] = n_classes;
                }
                n_classes += 1;
            }
        }
    }
    (classes, usize::from(n_classes))
}

/// The patterns' trie over byte classes, and each pattern's length.
fn trie(patterns: &[String], classes: &[u16; 256]) -> Option<(Vec<Node>, Vec<u32>)> {
    let empty = || Node {
        next: Vec::new(),
        own: Vec::new(),
    };
    let mut nodes: Vec<Node> = vec![empty()];
    let mut lens = Vec::with_capacity(patterns.len());
    for (pid, p) in patterns.iter().enumerate() {
        let mut cur = 0usize;
        for &b in p.as_bytes() {
            let c = classes[usize::from(b)];
            cur = match nodes[cur].next.binary_search_by_key(&c, |e| e.0) {
                Ok(i) => nodes[cur].next[i].1 as usize,
                Err(i) => {
                    let id = nodes.len();
                    nodes[cur].next.insert(i, (c, u32::try_from(id).ok()?));
                    nodes.push(empty());
                    id
                }
            };
        }
        nodes[cur].own.push(u32::try_from(pid).ok()?);
        lens.push(u32::try_from(p.len()).ok()?);
    }
    Some((nodes, lens))
}

/// The automaton over the trie's own numbering, found breadth-first.
struct Links {
    /// `node * stride + class` → next node.
    delta: Vec<u32>,
    /// The nearest proper suffix node with patterns of its own, or `u32::MAX`.
    dict: Vec<u32>,
    /// Nodes in breadth-first order.
    order: Vec<u32>,
}

fn links(nodes: &[Node], stride: usize) -> Links {
    let n = nodes.len();
    let mut delta = vec![0u32; n * stride];
    let mut fail = vec![0u32; n];
    let mut dict = vec![u32::MAX; n];
    let mut order = Vec::with_capacity(n);
    let mut queue = VecDeque::new();
    for &(c, child) in &nodes[0].next {
        delta[usize::from(c)] = child;
        queue.push_back(child);
    }
    order.push(0u32);
    while let Some(u) = queue.pop_front() {
        let u = u as usize;
        order.push(u as u32);
        let f = fail[u] as usize;
        for c in 0..stride {
            delta[u * stride + c] = delta[f * stride + c];
        }
        for &(c, v) in &nodes[u].next {
            let v = v as usize;
            let fv = delta[f * stride + usize::from(c)] as usize;
            fail[v] = fv as u32;
            dict[v] = if !nodes[fv].own.is_empty() { fv as u32 } else { dict[fv] };
            delta[u * stride + usize::from(c)] = v as u32;
            queue.push_back(v as u32);
        }
    }
    Links { delta, dict, order }
}

/// The search layout of the table (see [`LiteralDfa`]'s fields).
struct Layout {
    start: u32,
    trans: Vec<u32>,
    first_match: u32,
    out_ranges: Vec<(u32, u32)>,
    outputs: Vec<u32>,
}

/// The table in its search layout: non-match states first (breadth-first), match
/// states from the power of two above them, ids premultiplied by `stride`; and each
/// match state's patterns, its own first.
fn lay_out(nodes: &[Node], links: &Links, stride: usize) -> Option<Layout> {
    let Links { delta, dict, order } = links;
    let n = nodes.len();
    let is_match = |s: usize| !nodes[s].own.is_empty() || dict[s] != u32::MAX;
    // Renumber: non-match states first, so "is a match" is one comparison.
    let mut new_id = vec![0u32; n];
    let mut next = 0u32;
    for pass in [false, true] {
        for &s in order {
            if is_match(s as usize) == pass {
                new_id[s as usize] = next;
                next += 1;
            }
        }
    }
    let first_match_idx = order.iter().filter(|s| !is_match(**s as usize)).count();
    let first_match = (first_match_idx * stride).next_power_of_two();
    let len = (first_match + (n - first_match_idx) * stride).next_power_of_two();
    if len > MAX_TABLE {
        return None;
    }
    let premultiplied = |old: usize| -> Option<u32> {
        let id = new_id[old] as usize;
        let at = match id.checked_sub(first_match_idx) {
            None => id * stride,
            Some(m) => first_match + m * stride,
        };
        u32::try_from(at).ok()
    };
    let mut trans = vec![0u32; len];
    for s in 0..n {
        let row = premultiplied(s)? as usize;
        for c in 0..stride {
            trans[row + c] = premultiplied(delta[s * stride + c] as usize)?;
        }
    }
    let mut out_ranges = vec![(0u32, 0u32); n - first_match_idx];
    let mut outputs = Vec::new();
    for s in (0..n).filter(|&s| is_match(s)) {
        let begin = outputs.len() as u32;
        outputs.extend_from_slice(&nodes[s].own);
        let mut d = dict[s];
        while d != u32::MAX {
            outputs.extend_from_slice(&nodes[d as usize].own);
            d = dict[d as usize];
        }
        out_ranges[new_id[s] as usize - first_match_idx] = (begin, outputs.len() as u32);
    }
    Some(Layout {
        start: premultiplied(0)?,
        trans,
        first_match: u32::try_from(first_match).ok()?,
        out_ranges,
        outputs,
    })
}

impl LiteralDfa {
    /// Builds the automaton; `None` when the table would exceed `MAX_TABLE` entries.
    pub fn new(patterns: &[String]) -> Option<LiteralDfa> {
        let (classes, stride) = byte_classes(patterns);
        let (nodes, lens) = trie(patterns, &classes)?;
        if nodes.len().checked_mul(stride)? > MAX_TABLE {
            return None;
        }
        let links = links(&nodes, stride);
        let layout = lay_out(&nodes, &links, stride)?;
        Some(LiteralDfa {
            classes,
            stride,
            mask: layout.trans.len() - 1,
            trans: layout.trans,
            start: layout.start,
            first_match: layout.first_match,
            out_ranges: layout.out_ranges,
            outputs: layout.outputs,
            max_len: lens.iter().copied().max().unwrap_or(0) as usize,
            lens,
            bytes: patterns.iter().flat_map(|p| p.bytes()).collect(),
            ends: patterns
                .iter()
                .scan(0u32, |end, p| {
                    *end += p.len() as u32;
                    Some(*end)
                })
                .collect(),
        })
    }

    /// The transition table as a slice of exactly `mask + 1` entries.
    #[inline(always)]
    fn table(&self) -> &[u32] {
        &self.trans[..=self.mask]
    }

    /// The patterns that end at match state `s`.
    fn outputs(&self, s: u32) -> &[u32] {
        let (a, b) = self.out_ranges[((s - self.first_match) as usize) / self.stride];
        &self.outputs[a as usize..b as usize]
    }

    fn emit(&self, s: u32, end: usize, f: &mut impl FnMut(u32, usize, usize)) {
        for &p in self.outputs(s) {
            f(p, end - self.lens[p as usize] as usize, end);
        }
    }

    /// Calls `f(pattern, start, end)` for every occurrence of every pattern in `hay`,
    /// overlapping ones included (in no particular order).
    pub fn for_each_match(&self, hay: &[u8], mut f: impl FnMut(u32, usize, usize)) {
        self.for_each_match_in(1, |_| hay, |_, p, a, b| f(p, a, b));
    }

    /// Four independent walks in lockstep over `b[k][j..]` (the four slices are equally
    /// long), until the end or until a step leaves any of them in a match state; gives the
    /// number of bytes each walk has consumed. The four lookups of a step do not depend on
    /// each other, so they overlap. Kept out of line and free of calls so that the states,
    /// the slices and the counter all stay in registers.
    #[inline(never)]
    fn walk4(&self, b: [&[u8]; STREAMS], s: &mut [u32; STREAMS], mut j: usize) -> usize {
        let (t, m, cl, fm) = (self.table(), self.mask, &self.classes, self.first_match);
        let n = b[0].len();
        let (b0, b1, b2, b3) = (&b[0][..n], &b[1][..n], &b[2][..n], &b[3][..n]);
        let fm = fm as usize;
        let [mut s0, mut s1, mut s2, mut s3] = s.map(|x| x as usize);
        while j < n {
            // Masked indices are always in the table, so the loads carry no bounds checks.
            s0 = t[(s0 + usize::from(cl[usize::from(b0[j])])) & m] as usize;
            s1 = t[(s1 + usize::from(cl[usize::from(b1[j])])) & m] as usize;
            s2 = t[(s2 + usize::from(cl[usize::from(b2[j])])) & m] as usize;
            s3 = t[(s3 + usize::from(cl[usize::from(b3[j])])) & m] as usize;
            j += 1;
            if (s0 | s1 | s2 | s3) >= fm {
                break;
            }
        }
        // Table entries are u32, so the states fit.
        *s = [s0 as u32, s1 as u32, s2 as u32, s3 as u32];
        j
    }

    /// Calls `f(text, pattern, start, end)` for every occurrence of every pattern in each of
    /// `hays` (in no particular order).
    ///
    /// A walk is bound by the latency of one table load per byte, and a body's table rows
    /// are rarely all in cache: so four lanes walk in lockstep, lane `k` over the `k`-th
    /// quarter of the texts laid end to end (at least `PIECE_MIN` bytes; see
    /// [`lane_bounds`]), all four ending together. A lane's piece of a text that starts
    /// inside the text starts `max_len - 1` bytes early, so its state is exact from its
    /// first byte, and reports only the matches that end inside the piece.
    pub fn for_each_match_in<'h>(
        &self,
        count: usize,
        hay: impl Fn(usize) -> &'h [u8],
        mut f: impl FnMut(usize, u32, usize, usize),
    ) {
        let total: usize = (0..count).map(|i| hay(i).len()).sum();
        let warm = self.max_len.saturating_sub(1);
        let bounds = lane_bounds(total, warm);
        let mut cursors: [Cursor; STREAMS] = std::array::from_fn(|k| Cursor {
            lo: bounds[k],
            hi: bounds[k + 1],
            text: 0,
            at: 0,
        });
        let start = self.start;
        let take = |c: &mut Cursor| c.next_piece(count, &hay, start, warm);
        let mut lanes: [Option<Lane>; STREAMS] = std::array::from_fn(|k| take(&mut cursors[k]));
        while let [Some(l0), Some(l1), Some(l2), Some(l3)] = lanes {
            let l = [l0, l1, l2, l3];
            let h = [hay(l0.text), hay(l1.text), hay(l2.text), hay(l3.text)];
            let mut s = [l0.state, l1.state, l2.state, l3.state];
            let mut pos = [l0.pos, l1.pos, l2.pos, l3.pos];
            let steps = l.iter().map(|x| x.end - x.pos).min().unwrap_or(0);
            let b: [&[u8]; STREAMS] = std::array::from_fn(|k| &h[k][pos[k]..pos[k] + steps]);
            let mut j = 0;
            while j < steps {
                j = self.walk4(b, &mut s, j);
                // `j` bytes consumed: a lane in a match state has one ending at `pos + j`.
                for k in 0..STREAMS {
                    if s[k] >= self.first_match && pos[k] + j > l[k].region {
                        let text = l[k].text;
                        self.emit(s[k], pos[k] + j, &mut |p, a, b| f(text, p, a, b));
                    }
                }
            }
            for p in &mut pos {
                *p += steps;
            }
            for k in 0..STREAMS {
                lanes[k] = if pos[k] == l[k].end {
                    take(&mut cursors[k])
                } else {
                    Some(Lane {
                        state: s[k],
                        pos: pos[k],
                        ..l[k]
                    })
                };
            }
        }
        // A lane ran out (or fewer than four had bytes): the rest finish one at a time.
        for (lane, cursor) in lanes.iter_mut().zip(&mut cursors) {
            while let Some(l) = lane.take() {
                let h = hay(l.text);
                self.walk_from(h, l.state, l.pos, l.region, l.end, &mut |p, a, b| f(l.text, p, a, b));
                *lane = take(cursor);
            }
        }
    }

    fn walk_from(
        &self,
        hay: &[u8],
        mut s: u32,
        from: usize,
        region: usize,
        end: usize,
        f: &mut impl FnMut(u32, usize, usize),
    ) {
        if from >= end {
            return;
        }
        let (t, m) = (self.table(), self.mask);
        for (k, &b) in hay[from..end].iter().enumerate() {
            s = t[(s as usize + usize::from(self.classes[usize::from(b)])) & m];
            if s >= self.first_match && from + k >= region {
                self.emit(s, from + k + 1, f);
            }
        }
    }

    /// Calls `f(pattern, start, end)` for every occurrence in `hay` that reads some of its
    /// `joints` as spaces and others as nothing: `joints` are the offsets (ascending)
    /// where `hay`, a joined detection view, dropped a character between two word
    /// characters. The walk carries every state the text can be in with each joint read
    /// either way, at most [`JOINT_THREADS`] at once (they mostly merge again within a few
    /// bytes). Occurrences that read no joint as a space are the plain walk's and are not
    /// repeated; those that read joints only as spaces are found here as well as in the
    /// spaced view.
    pub fn for_each_joint_match(&self, hay: &[u8], joints: &[u32], mut f: impl FnMut(u32, usize, usize)) {
        let space = usize::from(self.classes[usize::from(b' ')]);
        if space == 0 || joints.is_empty() {
            // No pattern has a space: reading a joint as one matches nothing more.
            return;
        }
        let (t, m) = (self.table(), self.mask);
        let mut states: Vec<u32> = vec![self.start];
        // The patterns checked at this byte: two states may end the same one here.
        let mut found: Vec<u32> = Vec::new();
        let mut next_joint = joints.iter().map(|&j| j as usize).peekable();
        for (i, &b) in hay.iter().enumerate() {
            let mut at_joint = false;
            while next_joint.next_if(|&j| j <= i).is_some() {
                at_joint = true;
            }
            if at_joint {
                // Each state goes on as it is (the joint read as nothing) and also reads a
                // space first (the joint read as one).
                for k in 0..states.len() {
                    let spaced = t[(states[k] as usize + space) & m];
                    if states.len() < JOINT_THREADS && !states.contains(&spaced) {
                        states.push(spaced);
                    }
                }
            }
            let c = usize::from(self.classes[usize::from(b)]);
            let mut kept = 0;
            for k in 0..states.len() {
                let s = t[(states[k] as usize + c) & m];
                if !states[..kept].contains(&s) {
                    states[kept] = s;
                    kept += 1;
                }
            }
            states.truncate(kept);
            found.clear();
            for &s in states.iter().filter(|&&s| s >= self.first_match) {
                for &p in self.outputs(s) {
                    // A pattern and its end fix its start: each is checked once.
                    if found.contains(&p) {
                        continue;
                    }
                    found.push(p);
                    if let Some(start) = self.joint_start(hay, joints, p, i + 1) {
                        f(p, start, i + 1);
                    }
                }
            }
        }
    }

    /// Where pattern `p`, read backwards from `end` over `hay` with each of its spaces
    /// that falls on a joint read from the joint, starts; `None` when it does not match
    /// that way or reads no joint as a space.
    fn joint_start(&self, hay: &[u8], joints: &[u32], p: u32, end: usize) -> Option<usize> {
        let p = p as usize;
        let from = match p {
            0 => 0,
            _ => self.ends[p - 1] as usize,
        };
        let pattern = &self.bytes[from..self.ends[p] as usize];
        let class = |b: u8| self.classes[usize::from(b)];
        let (mut at, mut spaces) = (end, 0);
        for &pb in pattern.iter().rev() {
            let on_joint = || u32::try_from(at).is_ok_and(|a| joints.binary_search(&a).is_ok());
            // At a joint the byte before is a word character, never a space.
            if pb == b' ' && on_joint() {
                spaces += 1;
                continue;
            }
            at = at.checked_sub(1)?;
            if class(hay[at]) != class(pb) {
                return None;
            }
        }
        (spaces > 0).then_some(at)
    }
}

/// Most states a joint walk carries at once; past it, a joint's second reading is not
/// followed (a text made of joints cannot make the walk slower than this many walks).
pub const JOINT_THREADS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(patterns: &[String], hay: &str) -> Vec<(u32, usize, usize)> {
        let lower = hay.to_ascii_lowercase();
        let mut out = Vec::new();
        for (pid, p) in patterns.iter().enumerate() {
            let p = p.to_ascii_lowercase();
            let mut i = 0;
            while let Some(k) = lower[i..].find(&p) {
                out.push((pid as u32, i + k, i + k + p.len()));
                i += k + 1;
                while !lower.is_char_boundary(i) {
                    i += 1;
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn all(dfa: &LiteralDfa, hay: &str) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        dfa.for_each_match(hay.as_bytes(), |p, s, e| out.push((p, s, e)));
        out.sort_unstable();
        out
    }

    #[test]
    fn finds_every_overlapping_occurrence_case_insensitively() {
        let pats: Vec<String> = ["he", "she", "his", "hers", "HE"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        assert_eq!(all(&dfa, "uSHErs and his"), naive(&pats, "uSHErs and his"));
    }

    #[test]
    fn lanes_over_many_texts_agree_with_a_naive_search() {
        let pats: Vec<String> = ["he", "she", "his", "hers", "ab", "bca", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        // Texts of many lengths (empty, tiny, lockstep-sized, one above the interleaving
        // threshold) so lanes end at different times and refill.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut texts: Vec<String> = Vec::new();
        for n in [0usize, 1, 3, 17, 40, 2, 90, 5, 600, 33, 0, 7, 250, 64, 1, 12] {
            let t: String = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ["he", "s", "his", "r", "a", "b", "c", " "][(x % 8) as usize]
                })
                .collect();
            texts.push(t);
        }
        let hays: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let mut got: Vec<Vec<(u32, usize, usize)>> = vec![Vec::new(); texts.len()];
        dfa.for_each_match_in(hays.len(), |i| hays[i], |i, p, a, b| got[i].push((p, a, b)));
        for (i, t) in texts.iter().enumerate() {
            got[i].sort_unstable();
            assert_eq!(got[i], naive(&pats, t), "text {i} ({} bytes)", t.len());
        }
    }

    #[test]
    fn interleaved_streams_agree_with_a_naive_search() {
        // A deterministic pseudo-random text over a small alphabet produces many matches,
        // including ones that straddle the stream boundaries.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"abcAB -";
        let hay: String = (0..20_000).map(|_| alphabet[(next() % 7) as usize] as char).collect();
        let pats: Vec<String> = (0..60)
            .map(|_| {
                (0..(1 + next() % 9))
                    .map(|_| alphabet[(next() % 5) as usize] as char)
                    .collect()
            })
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        let got = all(&dfa, &hay);
        assert!(got.len() > 1000);
        assert_eq!(got, naive(&pats, &hay));
        for len in [0usize, 1, 511, 512, 513, 2047, 2048, 2049, 4099, 8191] {
            assert_eq!(all(&dfa, &hay[..len]), naive(&pats, &hay[..len]), "length {len}");
        }
    }

    #[test]
    fn pieces_find_long_patterns_across_their_boundaries() {
        // A 200-byte text is cut into 64-byte pieces: a 20-byte pattern placed at every
        // offset around the cuts is found once, wherever it straddles one, alone and
        // among other texts.
        let long = "projectkazumirtol123".to_string();
        let pats = vec![long.clone(), "mirt".to_string(), "x".to_string()];
        let dfa = LiteralDfa::new(&pats).expect("builds");
        let texts: Vec<String> = (30..180)
            .map(|off| format!("{}{long}{}", "y".repeat(off), "y".repeat(180 - off)))
            .collect();
        for t in &texts {
            assert_eq!(all(&dfa, t), naive(&pats, t), "offset {}", t.find('p').unwrap_or(0));
        }
        let hays: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let mut got: Vec<Vec<(u32, usize, usize)>> = vec![Vec::new(); texts.len()];
        dfa.for_each_match_in(hays.len(), |i| hays[i], |i, p, a, b| got[i].push((p, a, b)));
        for (i, t) in texts.iter().enumerate() {
            got[i].sort_unstable();
            assert_eq!(got[i], naive(&pats, t));
        }
    }

    #[test]
    fn lanes_cover_the_texts_once_and_walk_about_as_much() {
        for total in [0usize, 1, 63, 64, 65, 200, 784, 1289, 4096, 65_536, 1_000_003] {
            for warm in [0usize, 1, 30, 63, 500, 10_000] {
                let b = lane_bounds(total, warm);
                assert_eq!((b[0], b[STREAMS]), (0, total), "{total} {warm}");
                assert!(b.windows(2).all(|w| w[0] <= w[1]), "{total} {warm}: {b:?}");
                // What each lane walks: its part, and `warm` bytes before it (except the first).
                let walked: Vec<usize> = (0..STREAMS)
                    .map(|k| b[k + 1] - b[k] + if k > 0 && b[k + 1] > b[k] { warm.min(b[k]) } else { 0 })
                    .collect();
                if total >= 4 * PIECE_MIN && warm <= total / 8 {
                    let (lo, hi) = (walked.iter().min(), walked.iter().max());
                    assert!(
                        hi.zip(lo).is_some_and(|(h, l)| h - l <= STREAMS),
                        "{total} {warm}: {walked:?}"
                    );
                }
            }
        }
    }

    /// Occurrences across joints by definition: every way of reading the joints, each
    /// searched naively, keeping the occurrences that read at least one joint as a space.
    fn across_joints(patterns: &[String], hay: &str, joints: &[u32]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        for ways in 0u32..1 << joints.len() {
            // The reading, and the hay offset of each of its bytes (a joint's space: the
            // offset after it; `true` marks a joint's space).
            let (mut text, mut at) = (String::new(), Vec::new());
            for (i, c) in hay.char_indices() {
                if let Some(k) = joints.iter().position(|&j| j as usize == i)
                    && ways >> k & 1 == 1
                {
                    text.push(' ');
                    at.push((i, true));
                }
                text.push(c);
                at.extend((0..c.len_utf8()).map(|b| (i + b, false)));
            }
            for (p, s, e) in naive(patterns, &text) {
                if at[s..e].iter().any(|x| x.1) {
                    out.push((p, at[s].0, at[e - 1].0 + 1));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn joint_matches(dfa: &LiteralDfa, hay: &str, joints: &[u32]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        dfa.for_each_joint_match(hay.as_bytes(), joints, |p, s, e| out.push((p, s, e)));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_phrase_split_and_joined_at_once_is_found_across_its_joints() {
        let pats: Vec<String> = ["project falcon", "falcon", "ject fal"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        // `pro<ZWSP>ject<ZWSP>falcon` joined: `projectfalcon`, joints after `pro` and `ject`.
        let got = joint_matches(&dfa, "see ProjectFalcon now", &[7, 11]);
        assert_eq!(got, vec![(0, 4, 17), (2, 7, 14)]);
        assert_eq!(got, across_joints(&pats, "see ProjectFalcon now", &[7, 11]));
        // A joint that no reading turns into a term's space finds nothing.
        assert!(joint_matches(&dfa, "projectfalcon", &[6]).is_empty());
        // No joints, or no pattern with a space: nothing to add to the plain walk.
        assert!(joint_matches(&dfa, "projectfalcon", &[]).is_empty());
        let plain = LiteralDfa::new(&["falcon".to_string()]).expect("builds");
        assert!(joint_matches(&plain, "projectfalcon", &[7]).is_empty());
    }

    #[test]
    fn joint_walks_agree_with_every_reading_searched_naively() {
        let pats: Vec<String> = ["a b", "ab a", "b ab", "ba", "a ba b", "b b b", "aab b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        let mut rng = crate::fuzzing::Rng::new(11);
        for _ in 0..400 {
            let len = 1 + rng.below(14);
            let hay: String = (0..len)
                .map(|_| [b'a', b'b', b'A', b' '][rng.below(4)] as char)
                .collect();
            // Joints sit between two word characters.
            let bytes = hay.as_bytes();
            let joints: Vec<u32> = (1..len)
                .filter(|&i| bytes[i - 1] != b' ' && bytes[i] != b' ' && rng.below(2) == 0)
                .map(|i| i as u32)
                .collect();
            assert_eq!(
                joint_matches(&dfa, &hay, &joints),
                across_joints(&pats, &hay, &joints),
                "{hay:?} {joints:?}"
            );
        }
    }

    #[test]
    fn a_text_made_of_joints_is_walked_with_bounded_states() {
        // Every byte boundary a joint: the walk keeps at most JOINT_THREADS states and
        // still finds a term whose only joint is the last one.
        let pats: Vec<String> = ["project falcon", "a a a a a a a a a a a a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dfa = LiteralDfa::new(&pats).expect("builds");
        let hay = format!("{}projectfalcon", "a".repeat(20_000));
        let joints: Vec<u32> = (1..20_000).chain([20_007]).collect();
        let got = joint_matches(&dfa, &hay, &joints);
        assert!(got.contains(&(0, 20_000, 20_013)), "{:?}", got.last());
    }

    #[test]
    fn non_ascii_bytes_match_exactly() {
        let pats = vec!["müller".to_string(), "MÜLLER".to_string()];
        let dfa = LiteralDfa::new(&pats).expect("builds");
        assert_eq!(all(&dfa, "Herr Müller und MÜLLER").len(), 2);
    }
}
