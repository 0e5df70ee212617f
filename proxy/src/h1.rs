//! The gateway's reader of upstream HTTP/1.1 answers: the head parsed once (httparse) into
//! one buffer, the body framed by its `Content-Length`, its chunked transfer coding or the
//! connection's end, and handed out as the bytes arrive (no copy: each piece is a slice
//! of the read buffer). The gateway always sends a POST and never asks for an upgrade, so
//! an answer has a body unless its status says otherwise.

use bytes::{Buf, Bytes, BytesMut};
use kt_policy::Headers;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest answer head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in an answer head.
const MAX_FIELDS: usize = 128;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Room made in the buffer before each read.
const READ_ROOM: usize = 16 * 1024;

/// Why an answer could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection ended (or failed) before any byte of the answer: on a reused
    /// connection, the upstream closed it while it was idle.
    NothingRead(String),
    /// Anything else: a broken head or body, or the connection lost partway.
    Broken(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NothingRead(m) | ReadError::Broken(m) => f.write_str(m),
        }
    }
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left (`Content-Length`).
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// The body runs until the upstream closes the connection.
    Close,
    /// The body has been read to its end.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// This many bytes of the current chunk are left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// An answer whose head has been read.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Headers,
    framing: Framing,
    keepalive: bool,
    /// Bytes read from the connection and not handed out yet.
    buf: BytesMut,
}

impl Answer {
    /// Reads an answer's head from `io`, skipping interim (1xx) answers.
    pub async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> Result<Answer, ReadError> {
        let mut buf = BytesMut::with_capacity(READ_ROOM);
        let mut any = false;
        loop {
            if !buf.is_empty() {
                let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                let mut parsed = httparse::Response::new(&mut fields);
                match parsed.parse(&buf) {
                    Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
                        let status = parsed.code.unwrap_or(0);
                        if (100..200).contains(&status) && status != 101 {
                            buf.advance(len);
                            continue;
                        }
                        let mut answer = Answer::from_head(&parsed).map_err(ReadError::Broken)?;
                        buf.advance(len);
                        answer.buf = buf;
                        return Ok(answer);
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
                    Ok(_) => {
                        return Err(ReadError::Broken(format!(
                            "the answer's head is larger than {MAX_HEAD} bytes"
                        )));
                    }
                    Err(e) => return Err(ReadError::Broken(format!("the answer's head could not be parsed: {e}"))),
                }
            }
            buf.reserve(READ_ROOM);
            match io.read_buf(&mut buf).await {
                Ok(0) if !any => return Err(ReadError::NothingRead("connection closed before any answer".into())),
                Ok(0) => return Err(ReadError::Broken("connection closed inside the answer's head".into())),
                Ok(_) => any = true,
                Err(e) if !any => return Err(ReadError::NothingRead(e.to_string())),
                Err(e) => return Err(ReadError::Broken(e.to_string())),
            }
        }
    }

    /// The answer a parsed head describes (its body buffer still empty).
    fn from_head(parsed: &httparse::Response<'_, '_>) -> Result<Answer, String> {
        let status = parsed.code.unwrap_or(0);
        if status == 101 {
            return Err("the upstream switched protocols (101), which was not asked for".into());
        }
        let bytes = parsed.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut headers = Headers::with_capacity(parsed.headers.len(), bytes);
        let (mut length, mut chunked, mut coded, mut close, mut keep) = (None::<u64>, false, false, false, false);
        for h in parsed.headers.iter() {
            let Ok(value) = std::str::from_utf8(h.value) else {
                continue;
            };
            headers.insert(h.name, value);
            if h.name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("the answer's content-length '{value}' is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("the answer has two different content-length fields".into());
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                coded = true;
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        let framing = match (status, chunked, coded, length) {
            (204 | 304, ..) => Framing::Done,
            (_, true, ..) => Framing::Chunked(Chunk::Size),
            // A transfer coding that does not end in chunked: the body runs to the close.
            (_, false, true, _) => Framing::Close,
            (_, _, _, Some(0)) => Framing::Done,
            (_, _, _, Some(n)) => Framing::Length(n),
            (_, _, _, None) => Framing::Close,
        };
        let http11 = parsed.version == Some(1);
        Ok(Answer {
            status,
            headers,
            keepalive: framing != Framing::Close && !close && (http11 || keep),
            framing,
            buf: BytesMut::new(),
        })
    }

    /// Whether the connection can carry another request: the body was read to its end, the
    /// upstream did not ask to close, and nothing was sent past the answer.
    pub fn reusable(&self) -> bool {
        self.framing == Framing::Done && self.keepalive && self.buf.is_empty()
    }

    /// The next piece of the body as it arrives; `None` at its end.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Option<Bytes>, String> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(left) => {
                    let (piece, left) = self.take(io, left, "the answer").await?;
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Some(piece));
                }
                Framing::Close => {
                    if self.buf.is_empty() && self.fill(io).await? == 0 {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let (piece, left) = self.take(io, left, "a chunk of the answer").await?;
                    self.framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Some(piece));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    while self.buf.len() < 2 {
                        if self.fill(io).await? == 0 {
                            return Err("connection closed after a chunk of the answer".into());
                        }
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err("a chunk of the answer is longer than its size says".into());
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(state @ (Chunk::Size | Chunk::Trailers)) => {
                    let line = self.line(io).await?;
                    self.framing = match state {
                        Chunk::Size => match chunk_size(&line)? {
                            0 => Framing::Chunked(Chunk::Trailers),
                            n => Framing::Chunked(Chunk::Data(n)),
                        },
                        // A trailer field is skipped; an empty line ends the body.
                        _ if line.is_empty() => Framing::Done,
                        _ => Framing::Chunked(Chunk::Trailers),
                    };
                }
            }
        }
    }

    /// Up to `left` bytes of `what` (reading when none are buffered), and how many are then
    /// left; the connection ending first is an error.
    async fn take<R: AsyncRead + Unpin>(&mut self, io: &mut R, left: u64, what: &str) -> Result<(Bytes, u64), String> {
        if self.buf.is_empty() && self.fill(io).await? == 0 {
            return Err(format!("connection closed with {left} bytes of {what} missing"));
        }
        let n = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        Ok((self.buf.split_to(n).freeze(), left - n as u64))
    }

    /// The next line (without its CRLF), bounded.
    async fn line<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Bytes, String> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let mut line = self.buf.split_to(i + 1).freeze();
                line.truncate(line.len() - if line.ends_with(b"\r\n") { 2 } else { 1 });
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(format!(
                    "a line of the answer's chunked body is longer than {MAX_LINE} bytes"
                ));
            }
            if self.fill(io).await? == 0 {
                return Err("connection closed inside the answer's chunked body".into());
            }
        }
    }

    async fn fill<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<usize, String> {
        self.buf.reserve(READ_ROOM);
        io.read_buf(&mut self.buf).await.map_err(|e| e.to_string())
    }
}

/// The size of a chunk from its size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let text = std::str::from_utf8(digits).unwrap_or("");
    if digits.is_empty() || digits.len() > 15 {
        return Err(format!("the chunk size '{text}' of the answer is not valid"));
    }
    u64::from_str_radix(text, 16).map_err(|_| format!("the chunk size '{text}' of the answer is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `data` in pieces of the given sizes, then ends.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let size = if self.sizes.is_empty() {
                usize::MAX
            } else {
                self.sizes.remove(0)
            };
            let n = size.min(self.data.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn read(data: &[u8], sizes: Vec<usize>) -> Result<(u16, Headers, Vec<u8>, bool), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut io = Pieces {
                data: data.to_vec(),
                at: 0,
                sizes,
            };
            let mut a = Answer::read_head(&mut io).await.map_err(|e| e.to_string())?;
            let mut body = Vec::new();
            while let Some(piece) = a.next(&mut io).await? {
                body.extend_from_slice(&piece);
            }
            Ok((a.status, a.headers.clone(), body, a.reusable()))
        })
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
        7\r\ndata: a\r\n19;ext=1\r\n\n\ndata: {\"x\": \"\\u00e9\"}\n\n\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn answers_are_framed_by_length_chunks_or_close_at_any_split() {
        let length = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nX-Request-Id: r1\r\n\r\n{\"ok\":true}".as_slice();
        let close = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}".as_slice();
        let cases: [(&[u8], &[u8], bool); 3] = [
            (length, b"{\"ok\":true}", true),
            (CHUNKED, b"data: a\n\ndata: {\"x\": \"\\u00e9\"}\n\n", true),
            (close, b"{\"a\":1}", false),
        ];
        for (wire, body, reusable) in cases {
            // Whole, byte by byte, and split at every offset into two reads.
            let mut splits = vec![vec![], vec![1; wire.len()]];
            splits.extend((1..wire.len()).map(|k| vec![k]));
            for sizes in splits {
                let (status, headers, got, reuse) = read(wire, sizes.clone()).expect("reads");
                assert_eq!(status, 200);
                assert_eq!(got, body, "split {sizes:?}");
                assert_eq!(reuse, reusable, "split {sizes:?}");
                assert!(headers.get("Content-Type").is_some() || headers.get("x-request-id") == Some("r1"));
            }
        }
    }

    #[test]
    fn interim_answers_are_skipped_and_bodiless_statuses_have_no_body() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(read(wire, vec![]).expect("reads").2, b"{}");
        let wire = b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
        let (status, _, body, reuse) = read(wire, vec![]).expect("reads");
        assert!(status == 204 && body.is_empty() && reuse);
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let (_, _, body, reuse) = read(wire, vec![]).expect("reads");
        assert!(body.is_empty() && !reuse, "connection: close is honoured");
    }

    #[test]
    fn broken_answers_are_refused_with_a_reason() {
        let broken: [(&[u8], &str); 8] = [
            (b"", "before any answer"),
            (b"HTTP/1.1 200 OK\r\ncontent-le", "inside the answer's head"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}",
                "7 bytes of the answer missing",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "not a number"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "chunk size 'zz'",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "longer than its size",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "could not be parsed"),
        ];
        for (wire, reason) in broken {
            let e = read(wire, vec![]).expect_err("refused");
            assert!(e.contains(reason), "{e:?} should say {reason:?}");
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x-f: 1\r\n".repeat(MAX_FIELDS + 1));
        let e = read(many.as_bytes(), vec![]).map(|r| r.0).expect_err("refused");
        assert!(e.contains("too many headers"), "{e}");
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        for sizes in [vec![], vec![1000; 100]] {
            let e = read(huge.as_bytes(), sizes).map(|r| r.0).expect_err("refused");
            assert!(e.contains("larger than"), "{e}");
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let nothing = rt.block_on(Answer::read_head(&mut Pieces {
            data: Vec::new(),
            at: 0,
            sizes: vec![],
        }));
        assert!(
            matches!(nothing, Err(ReadError::NothingRead(_))),
            "a closed idle connection is told apart"
        );
    }

    #[test]
    fn bytes_past_the_answer_make_the_connection_unusable() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n";
        let (_, _, body, reuse) = read(wire, vec![]).expect("reads");
        assert_eq!(body, b"{}");
        assert!(!reuse, "an upstream that sent more than its answer is not reused");
    }
}
