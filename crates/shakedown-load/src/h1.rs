//! A lean HTTP/1.1 client connection for load: the request is serialized once per template and
//! written with one call; the response head is parsed in place (httparse) and the body framed
//! by the rules of RFC 9112 §6.3 — no body for HEAD, 1xx, 204 and 304; `chunked` when it is the
//! final transfer coding; else `Content-Length`; else until the server closes.
//!
//! Why not hyper's client here: its connection runs as a separate dispatcher with a channel
//! between request and connection, which a load generator pays on every request (about a third
//! of its own CPU per request in profiles). HTTP/2 stays on hyper.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 100;

/// How an exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum H1Error {
    /// The connection ended (or was reset) before any byte of a response.
    ClosedBeforeResponse,
    /// The connection ended in the middle of a response.
    Incomplete,
    /// The response is not valid HTTP/1.x.
    Malformed(&'static str),
    /// Another I/O error.
    Io(io::ErrorKind),
}

impl H1Error {
    /// The name the summary reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClosedBeforeResponse | Self::Incomplete => "connection closed",
            Self::Malformed(_) => "bad response",
            Self::Io(io::ErrorKind::ConnectionReset) => "connection closed",
            Self::Io(_) => "connection error",
        }
    }
}

impl From<io::Error> for H1Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}

/// A response read to its end.
#[derive(Debug, PartialEq, Eq)]
pub struct H1Response {
    /// Status code.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub reusable: bool,
    /// The body, when asked for (decoded from chunks).
    pub body: Option<Bytes>,
}

/// One HTTP/1.1 connection over any stream.
pub struct H1Conn<S> {
    io: S,
    buf: BytesMut,
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1Conn<S> {
    /// Wraps a connected stream.
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Writes `request` (a whole serialized request) and reads the response to its end.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head: bool,
        want_body: bool,
    ) -> Result<H1Response, H1Error> {
        self.io
            .write_all(request)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    H1Error::ClosedBeforeResponse
                }
                _ => H1Error::from(e),
            })?;
        self.io.flush().await?;
        let (status, framing, mut reusable) = loop {
            let (status, framing, reusable, used) = self.parse_head(head).await?;
            self.buf.advance(used);
            // Interim answers (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            if status == 101 {
                return Err(H1Error::Malformed("101 Switching Protocols"));
            }
            break (status, framing, reusable);
        };
        let mut kept = want_body.then(BytesMut::new);
        match framing {
            Framing::None => {}
            Framing::Length(n) => self.read_exact_body(n, kept.as_mut()).await?,
            Framing::Chunked => self.read_chunked(kept.as_mut()).await?,
            Framing::UntilClose => {
                reusable = false;
                loop {
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(&self.buf);
                    }
                    self.buf.clear();
                    if self.fill().await? == 0 {
                        break;
                    }
                }
            }
        }
        // Bytes beyond the response would be an answer to nothing: the connection is not safe.
        if !self.buf.is_empty() {
            reusable = false;
        }
        Ok(H1Response {
            status,
            reusable,
            body: kept.map(BytesMut::freeze),
        })
    }

    async fn fill(&mut self) -> Result<usize, H1Error> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        Ok(self.io.read_buf(&mut self.buf).await?)
    }

    /// Reads until a whole head is buffered; returns status, framing, keep-alive, head length.
    async fn parse_head(&mut self, head: bool) -> Result<(u16, Framing, bool, usize), H1Error> {
        let mut first = true;
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(used)) => {
                        let status = resp.code.ok_or(H1Error::Malformed("no status"))?;
                        let http10 = resp.version == Some(0);
                        let (framing, keep) = framing(status, head, http10, resp.headers)?;
                        return Ok((status, framing, keep, used));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_HEAD {
                            return Err(H1Error::Malformed("response head too large"));
                        }
                    }
                    Err(_) => return Err(H1Error::Malformed("invalid response head")),
                }
            }
            let n = match self.fill().await {
                Ok(n) => n,
                Err(H1Error::Io(io::ErrorKind::ConnectionReset))
                    if first && self.buf.is_empty() =>
                {
                    return Err(H1Error::ClosedBeforeResponse);
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    H1Error::ClosedBeforeResponse
                } else {
                    H1Error::Incomplete
                });
            }
            first = false;
        }
    }

    async fn read_exact_body(
        &mut self,
        mut left: u64,
        mut kept: Option<&mut BytesMut>,
    ) -> Result<(), H1Error> {
        loop {
            let take = (self.buf.len() as u64).min(left) as usize;
            if let Some(k) = kept.as_deref_mut() {
                k.extend_from_slice(&self.buf[..take]);
            }
            self.buf.advance(take);
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(H1Error::Incomplete);
            }
        }
    }

    async fn read_chunked(&mut self, mut kept: Option<&mut BytesMut>) -> Result<(), H1Error> {
        loop {
            // chunk-size [ chunk-ext ] CRLF
            let line = self.line().await?;
            let size_text = line.split(|b| *b == b';').next().unwrap_or(&[]);
            let size_text = std::str::from_utf8(size_text)
                .map_err(|_| H1Error::Malformed("chunk size"))?
                .trim();
            let size =
                u64::from_str_radix(size_text, 16).map_err(|_| H1Error::Malformed("chunk size"))?;
            if size == 0 {
                // Trailer fields, then the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, kept.as_deref_mut()).await?;
            if !self.line().await?.is_empty() {
                return Err(H1Error::Malformed("chunk not followed by CRLF"));
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF) from the buffer.
    async fn line(&mut self) -> Result<Vec<u8>, H1Error> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.advance(end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(H1Error::Malformed("line too long"));
            }
            if self.fill().await? == 0 {
                return Err(H1Error::Incomplete);
            }
        }
    }
}

/// RFC 9112 §6.3 message body length, and whether the connection persists.
fn framing(
    status: u16,
    head: bool,
    http10: bool,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, bool), H1Error> {
    let mut keep = !http10;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            let last = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or(&[])
                .trim_ascii();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let v: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(H1Error::Malformed("content-length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(H1Error::Malformed("conflicting content-length"));
            }
            length = Some(v);
        }
    }
    let framing = if head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((framing, keep))
}

/// Serializes a request once: request line, `host`, the headers, `content-length`, body.
pub fn serialize(
    method: &http::Method,
    path: &str,
    authority: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(http::header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length = !body.is_empty()
        || matches!(
            *method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
    if needs_length && !headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Runs one exchange against a scripted server that answers with `answer` in pieces.
    async fn against(
        answer: &'static [&'static [u8]],
        head: bool,
    ) -> (Result<H1Response, H1Error>, Vec<u8>) {
        let (client, mut server) = duplex(64 * 1024);
        let serve = tokio::spawn(async move {
            let mut got = vec![0u8; 1024];
            let n = server.read(&mut got).await.unwrap();
            got.truncate(n);
            for piece in answer {
                server.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            got
        });
        let mut conn = H1Conn::new(client);
        let r = conn
            .exchange(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", head, true)
            .await;
        (r, serve.await.unwrap())
    }

    #[tokio::test]
    async fn content_length_in_pieces() {
        let (r, sent) = against(
            &[
                b"HTTP/1.1 200 OK\r\ncontent-le",
                b"ngth: 5\r\n\r\nhe",
                b"llo",
            ],
            false,
        )
        .await;
        assert_eq!(sent, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(
            r.unwrap(),
            H1Response {
                status: 200,
                reusable: true,
                body: Some(Bytes::from_static(b"hello"))
            }
        );
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let (r, _) = against(
            &[b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;x=y\r\nhel", b"lo\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n"],
            false,
        )
        .await;
        let r = r.unwrap();
        assert_eq!((r.status, r.reusable), (503, true));
        assert_eq!(r.body.unwrap(), Bytes::from_static(b"hello world"));
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (r, _) = against(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            false,
        )
        .await;
        assert_eq!(
            r.unwrap(),
            H1Response {
                status: 204,
                reusable: true,
                body: Some(Bytes::new())
            }
        );
    }

    #[tokio::test]
    async fn head_has_no_body_even_with_a_length() {
        let (r, _) = against(&[b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"], true).await;
        assert_eq!(r.unwrap().status, 200);
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close() {
        let (r, _) = against(&[b"HTTP/1.0 200 OK\r\n\r\nall of ", b"it"], false).await;
        let r = r.unwrap();
        assert!(!r.reusable);
        assert_eq!(r.body.unwrap(), Bytes::from_static(b"all of it"));
        let (r, _) = against(
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n"],
            false,
        )
        .await;
        assert!(!r.unwrap().reusable);
        let (r, _) = against(
            &[b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n"],
            false,
        )
        .await;
        assert!(r.unwrap().reusable);
    }

    #[tokio::test]
    async fn failures_are_told_apart() {
        let (r, _) = against(&[], false).await;
        assert_eq!(r.unwrap_err(), H1Error::ClosedBeforeResponse);
        let (r, _) = against(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            false,
        )
        .await;
        assert_eq!(r.unwrap_err(), H1Error::Incomplete);
        let (r, _) = against(&[b"SMTP ready\r\n\r\n"], false).await;
        assert_eq!(r.unwrap_err().name(), "bad response");
        let (r, _) = against(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx"],
            false,
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            H1Error::Malformed("conflicting content-length")
        );
        let (r, _) = against(
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            false,
        )
        .await;
        assert_eq!(r.unwrap_err(), H1Error::Malformed("chunk size"));
    }

    #[tokio::test]
    async fn extra_bytes_make_the_connection_unusable() {
        let (r, _) = against(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n"],
            false,
        )
        .await;
        assert!(!r.unwrap().reusable);
    }

    #[test]
    fn requests_are_serialized_once() {
        let mut h = http::HeaderMap::new();
        h.insert("x-test", http::HeaderValue::from_static("1"));
        let r = serialize(&http::Method::POST, "/a?b=c", "search.test:8080", &h, b"hi");
        assert_eq!(&r[..], b"POST /a?b=c HTTP/1.1\r\nhost: search.test:8080\r\nx-test: 1\r\ncontent-length: 2\r\n\r\nhi");
        let r = serialize(&http::Method::GET, "/", "h", &http::HeaderMap::new(), b"");
        assert_eq!(&r[..], b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }
}
