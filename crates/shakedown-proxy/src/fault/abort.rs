//! The local answers of an injected abort, byte for byte as Envoy sends them.
//!
//! HTTP: the status, `content-type: text/plain`, body `fault filter abort`. gRPC (request
//! `content-type: application/grpc…`): HTTP 200 with `grpc-status` and `grpc-message` in a
//! trailers-only response (headers with END_STREAM on h2; `content-length: 0` and
//! `connection: close` on HTTP/1.x, as Envoy 1.40 answers); an
//! HTTP status asked of a gRPC request is mapped to a gRPC status as Envoy maps it.

use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, header};

use super::decide::AbortWith;
use crate::body::ResponseBody;

/// The body text of every injected HTTP abort.
pub const ABORT_BODY: &str = "fault filter abort";

/// Whether a request is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Builds the abort response for a request of `version`.
pub fn response(with: AbortWith, grpc_request: bool, version: Version) -> Response<ResponseBody> {
    let grpc_status = match (with, grpc_request) {
        (AbortWith::Http(s), true) => Some(http_to_grpc(s)),
        (AbortWith::Grpc(g), true) => Some(g),
        _ => None,
    };
    if let Some(g) = grpc_status {
        let mut r = Response::new(ResponseBody::empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(g));
        h.insert("grpc-message", HeaderValue::from_static(ABORT_BODY));
        if version < Version::HTTP_2 {
            // HTTP/1.x cannot carry the trailers a gRPC client waits for; Envoy closes.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return r;
    }
    let status = match with {
        AbortWith::Http(s) => StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        // A gRPC abort of a non-gRPC request: Envoy still answers 200 with the abort text.
        AbortWith::Grpc(_) => StatusCode::OK,
    };
    let mut r = Response::new(ResponseBody::full(ABORT_BODY));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_mapping() {
        assert_eq!(http_to_grpc(503), 14);
        assert_eq!(http_to_grpc(418), 2);
        assert_eq!(http_to_grpc(404), 12);
    }

    #[test]
    fn grpc_answer_is_trailers_only() {
        let r = response(AbortWith::Grpc(14), true, Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert!(http_body::Body::is_end_stream(r.body()));
        assert!(!r.headers().contains_key(header::CONNECTION));
        let r = response(AbortWith::Grpc(14), true, Version::HTTP_11);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        let r = response(AbortWith::Http(503), false, Version::HTTP_11);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "text/plain");
    }
}
