//! A case-insensitive literal-set automaton (Aho-Corasick, fully determinized), built in
//! time linear in the literals times the alphabet, and searched with several independent
//! streams interleaved so the CPU overlaps their table lookups: a DFA walk is bound by the
//! latency of one load per byte, and four walks in one loop hide most of it.

use std::collections::VecDeque;

/// Largest transition table accepted (entries); bigger sets use a slower fallback.
pub const MAX_TABLE: usize = 32 * 1024 * 1024;
/// Texts at least this long are split into interleaved streams.
const STREAM_MIN: usize = 512;
const STREAMS: usize = 4;

#[derive(Debug, Clone)]
pub struct LiteralDfa {
    /// Byte → equivalence class; ASCII letters share a class with their other case.
    classes: [u16; 256],
    stride: usize,
    /// `state * stride + class` → next state, premultiplied by `stride`.
    trans: Vec<u32>,
    start: u32,
    /// Premultiplied ids at or above this are match states.
    first_match: u32,
    /// Per match state (in id order from `first_match`): its range in `outputs`.
    out_ranges: Vec<(u32, u32)>,
    /// Pattern ids ending at a match state, own patterns first then suffix patterns.
    outputs: Vec<u32>,
    /// Byte length of each pattern.
    lens: Vec<u32>,
    max_len: usize,
}

struct Node {
    /// (class, child) sorted by class.
    next: Vec<(u16, u32)>,
    own: Vec<u32>,
}

impl LiteralDfa {
    /// Builds the automaton; `None` when the table would exceed `MAX_TABLE` entries.
    pub fn new(patterns: &[String]) -> Option<LiteralDfa> {
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
        let stride = usize::from(n_classes);
        // Trie.
        let mut nodes: Vec<Node> = vec![Node {
            next: Vec::new(),
            own: Vec::new(),
        }];
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
                        nodes.push(Node {
                            next: Vec::new(),
                            own: Vec::new(),
                        });
                        id
                    }
                };
            }
            nodes[cur].own.push(u32::try_from(pid).ok()?);
            lens.push(u32::try_from(p.len()).ok()?);
        }
        let n = nodes.len();
        if n.checked_mul(stride)? > MAX_TABLE {
            return None;
        }
        // Breadth-first: failure links and the full transition table (old numbering).
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
            for k in 0..nodes[u].next.len() {
                let (c, v) = nodes[u].next[k];
                let v = v as usize;
                let fv = delta[f * stride + usize::from(c)] as usize;
                fail[v] = fv as u32;
                dict[v] = if !nodes[fv].own.is_empty() { fv as u32 } else { dict[fv] };
                delta[u * stride + usize::from(c)] = v as u32;
                queue.push_back(v as u32);
            }
        }
        // Renumber: non-match states first, so "is a match" is one comparison.
        let is_match = |s: usize| !nodes[s].own.is_empty() || dict[s] != u32::MAX;
        let mut new_id = vec![0u32; n];
        let mut next = 0u32;
        for pass in [false, true] {
            for &s in &order {
                if is_match(s as usize) == pass {
                    new_id[s as usize] = next;
                    next += 1;
                }
            }
        }
        let first_match_idx = order.iter().filter(|s| !is_match(**s as usize)).count();
        let mut trans = vec![0u32; n * stride];
        for s in 0..n {
            let row = new_id[s] as usize * stride;
            for c in 0..stride {
                trans[row + c] = new_id[delta[s * stride + c] as usize] * stride as u32;
            }
        }
        let mut out_ranges = vec![(0u32, 0u32); n - first_match_idx];
        let mut outputs = Vec::new();
        for s in 0..n {
            if !is_match(s) {
                continue;
            }
            let begin = outputs.len() as u32;
            outputs.extend_from_slice(&nodes[s].own);
            let mut d = dict[s];
            while d != u32::MAX {
                outputs.extend_from_slice(&nodes[d as usize].own);
                d = dict[d as usize];
            }
            out_ranges[new_id[s] as usize - first_match_idx] = (begin, outputs.len() as u32);
        }
        Some(LiteralDfa {
            classes,
            stride,
            trans,
            start: new_id[0] * stride as u32,
            first_match: (first_match_idx * stride) as u32,
            out_ranges,
            outputs,
            max_len: lens.iter().copied().max().unwrap_or(0) as usize,
            lens,
        })
    }

    fn emit(&self, s: u32, end: usize, f: &mut impl FnMut(u32, usize, usize)) {
        let (a, b) = self.out_ranges[((s - self.first_match) as usize) / self.stride];
        for &p in &self.outputs[a as usize..b as usize] {
            f(p, end - self.lens[p as usize] as usize, end);
        }
    }

    /// Calls `f(pattern, start, end)` for every occurrence of every pattern in `hay`,
    /// overlapping ones included, in order of `end` within each of up to four regions.
    pub fn for_each_match(&self, hay: &[u8], mut f: impl FnMut(u32, usize, usize)) {
        if hay.len() < STREAM_MIN {
            self.walk(hay, 0, 0, hay.len(), &mut f);
            return;
        }
        let q = hay.len().div_ceil(STREAMS);
        let warm = self.max_len.saturating_sub(1);
        // Each stream starts `warm` bytes before its region so its state is exact from the
        // region's first byte; it reports only matches whose last byte is in its region.
        let bounds: [(usize, usize, usize); STREAMS] = std::array::from_fn(|k| {
            let region = (k * q).min(hay.len());
            let end = ((k + 1) * q).min(hay.len());
            (region.saturating_sub(warm), region, end)
        });
        let mut s = [self.start; STREAMS];
        let mut pos = [bounds[0].0, bounds[1].0, bounds[2].0, bounds[3].0];
        let steps = (0..STREAMS).map(|k| bounds[k].2 - bounds[k].0).min().unwrap_or(0);
        for _ in 0..steps {
            if self.step4(&mut s, [hay[pos[0]], hay[pos[1]], hay[pos[2]], hay[pos[3]]]) {
                for k in 0..STREAMS {
                    if s[k] >= self.first_match && pos[k] >= bounds[k].1 {
                        self.emit(s[k], pos[k] + 1, &mut f);
                    }
                }
            }
            for p in &mut pos {
                *p += 1;
            }
        }
        // Streams whose span was longer than the shortest finish one at a time.
        for k in 0..STREAMS {
            let (_, region, end) = bounds[k];
            self.walk_from(hay, s[k], pos[k], region, end, &mut f);
        }
    }

    /// One step of four independent walks over their next bytes; whether any of them is
    /// now in a match state. The four lookups do not depend on each other, so they overlap.
    #[inline(always)]
    fn step4(&self, s: &mut [u32; STREAMS], bytes: [u8; STREAMS]) -> bool {
        let (t, cl) = (&self.trans, &self.classes);
        for k in 0..STREAMS {
            s[k] = t[s[k] as usize + usize::from(cl[usize::from(bytes[k])])];
        }
        s.iter().fold(false, |any, &x| any | (x >= self.first_match))
    }

    /// Calls `f(text, pattern, start, end)` for every occurrence of every pattern in each of
    /// `hays`. Texts shorter than the interleaving threshold are walked four at a time in
    /// lockstep, each lane taking the next text when its own ends: a body's many short
    /// messages then keep four independent table lookups in flight instead of one.
    pub fn for_each_match_in<'h>(
        &self,
        count: usize,
        hay: impl Fn(usize) -> &'h [u8],
        mut f: impl FnMut(usize, u32, usize, usize),
    ) {
        for i in 0..count {
            if hay(i).len() >= STREAM_MIN {
                self.for_each_match(hay(i), |p, a, b| f(i, p, a, b));
            }
        }
        let mut queue = (0..count).filter(|&i| (1..STREAM_MIN).contains(&hay(i).len()));
        // Each lane: (text, state, position).
        let mut lanes: [Option<(usize, u32, usize)>; STREAMS] =
            std::array::from_fn(|_| queue.next().map(|i| (i, self.start, 0)));
        while let [Some(l0), Some(l1), Some(l2), Some(l3)] = lanes {
            let (texts, mut s, mut pos) = (
                [l0.0, l1.0, l2.0, l3.0],
                [l0.1, l1.1, l2.1, l3.1],
                [l0.2, l1.2, l2.2, l3.2],
            );
            let h = [hay(texts[0]), hay(texts[1]), hay(texts[2]), hay(texts[3])];
            let steps = (0..STREAMS).map(|k| h[k].len() - pos[k]).min().unwrap_or(0);
            for _ in 0..steps {
                if self.step4(&mut s, [h[0][pos[0]], h[1][pos[1]], h[2][pos[2]], h[3][pos[3]]]) {
                    for k in 0..STREAMS {
                        if s[k] >= self.first_match {
                            self.emit(s[k], pos[k] + 1, &mut |p, a, b| f(texts[k], p, a, b));
                        }
                    }
                }
                for p in &mut pos {
                    *p += 1;
                }
            }
            for k in 0..STREAMS {
                lanes[k] = if pos[k] == h[k].len() {
                    queue.next().map(|i| (i, self.start, 0))
                } else {
                    Some((texts[k], s[k], pos[k]))
                };
            }
        }
        // Fewer than four texts left: each finishes on its own.
        for (i, s, pos) in lanes.into_iter().flatten().chain(queue.map(|i| (i, self.start, 0))) {
            let h = hay(i);
            self.walk_from(h, s, pos, 0, h.len(), &mut |p, a, b| f(i, p, a, b));
        }
    }

    fn walk(&self, hay: &[u8], from: usize, region: usize, end: usize, f: &mut impl FnMut(u32, usize, usize)) {
        self.walk_from(hay, self.start, from, region, end, f);
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
        for (k, &b) in hay[from..end].iter().enumerate() {
            s = self.trans[s as usize + usize::from(self.classes[usize::from(b)])];
            if s >= self.first_match && from + k >= region {
                self.emit(s, from + k + 1, f);
            }
        }
    }
}

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
    fn non_ascii_bytes_match_exactly() {
        let pats = vec!["müller".to_string(), "MÜLLER".to_string()];
        let dfa = LiteralDfa::new(&pats).expect("builds");
        assert_eq!(all(&dfa, "Herr Müller und MÜLLER").len(), 2);
    }
}
