//! Counting what a store sends: each HTTP request by kind, retries and
//! listing pages included, as the provider will bill them. OpenDAL's
//! operations hide both (a listing is as many requests as it has pages of
//! 1,000 names, a retried put is two), so the count is taken where requests
//! leave: in the HTTP client every operator of the store shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_store::Tally;
use opendal::Buffer;
use opendal::raw::{HttpBody, HttpFetch};

/// The kind of an S3 request, by method and (for GET) query: a GET with
/// `list-type` is a listing (ListObjectsV2).
fn counter_of<'t>(tally: &'t Tally, request: &http::Request<Buffer>) -> &'t AtomicU64 {
    match *request.method() {
        http::Method::HEAD => &tally.sizes,
        http::Method::DELETE => &tally.deletes,
        http::Method::GET
            if request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("list-type="))) =>
        {
            &tally.lists
        }
        http::Method::GET => &tally.gets,
        // PUT, and POST (multi-object delete, multipart uploads: cairn
        // sends none, and S3 bills them as PUTs).
        _ => &tally.puts,
    }
}

/// An HTTP client that counts each request, then sends it with `inner`.
pub(crate) struct CountingClient {
    pub(crate) inner: reqwest::Client,
    pub(crate) tally: Arc<Tally>,
}

impl HttpFetch for CountingClient {
    async fn fetch(
        &self,
        request: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        let is_head = request.method() == http::Method::HEAD;
        counter_of(&self.tally, &request).fetch_add(1, Ordering::Relaxed);
        self.tally
            .bytes_written
            .fetch_add(request.body().len() as u64, Ordering::Relaxed);
        let response = self.inner.fetch(request).await?;
        // What the server announces it sends (the reader may stop early:
        // a read past its bound is cut off); a HEAD's length is the
        // object's, not an answer's.
        if is_head {
            return Ok(response);
        }
        let announced = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.tally
            .bytes_read
            .fetch_add(announced, Ordering::Relaxed);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, uri: &str) -> http::Request<Buffer> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Buffer::new())
            .expect("a request")
    }

    #[test]
    fn requests_are_counted_by_kind() {
        let tally = Tally::default();
        for (method, uri) in [
            (http::Method::GET, "http://h/b/packs/aa/x"),
            (http::Method::GET, "http://h/b?list-type=2&prefix=packs%2F"),
            (http::Method::GET, "http://h/b?prefix=x&list-type=2"),
            (http::Method::HEAD, "http://h/b/config/config"),
            (http::Method::PUT, "http://h/b/packs/aa/x"),
            (http::Method::DELETE, "http://h/b/sessions/s"),
        ] {
            counter_of(&tally, &request(method, uri)).fetch_add(1, Ordering::Relaxed);
        }
        let c = tally.counts();
        assert_eq!(
            (c.gets, c.lists, c.sizes, c.puts, c.deletes),
            (1, 2, 1, 1, 1)
        );
    }
}
