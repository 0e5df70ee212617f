//! Fuzz target of the gateway: an upstream HTTP/1.1 answer read exactly as the gateway
//! reads one (head, then body pieces), from bytes cut into pieces. Driven on stable by
//! `tests/fuzz.rs` and by the `cargo fuzz` harness in `fuzz/`.

use tokio::io::AsyncRead;

use crate::h1::Answer;

/// Hands out `data` in pieces of `step` bytes, then ends.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads an answer from `data` (its first byte chooses the piece size): never panics, and
/// never hands out more body bytes than it was given.
pub fn h1_answer(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let mut io = Pieces {
            data: body,
            step: usize::from(cut % 31) + 1,
        };
        let Ok(mut answer) = Answer::read_head(&mut io).await else {
            return;
        };
        let mut total = 0usize;
        while let Ok(Some(piece)) = answer.next(&mut io).await {
            total += piece.len();
            assert!(total <= body.len(), "more body than bytes read");
        }
        let _ = answer.reusable();
    });
}
