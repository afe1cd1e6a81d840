//! Talking to the object store: the S3 configuration (from a URL and the
//! usual `AWS_*` variables), timeouts and bounded retries, the small
//! runtime that drives `object_store`'s futures, and the two blocking
//! bridges: a [`Read`] over a download and a [`Write`] into an upload.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut, S3CopyIfNotExists};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::error::{Error, Result};

/// What the remote tier was doing when it failed, named in
/// [`Error::Remote`] messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteOp {
    /// Listing objects.
    List,
    /// Reading an object's metadata.
    Head,
    /// Downloading an object.
    Get,
    /// Uploading an object in one request.
    Put,
    /// Uploading an object in parts (multipart upload).
    Upload,
    /// Copying an uploaded object to its key, if that is free.
    Copy,
    /// Deleting an object.
    Delete,
    /// Configuring the store or its runtime.
    Configure,
}

impl fmt::Display for RemoteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteOp::List => "list",
            RemoteOp::Head => "stat",
            RemoteOp::Get => "download",
            RemoteOp::Put => "upload",
            RemoteOp::Upload => "upload (multipart)",
            RemoteOp::Copy => "publish",
            RemoteOp::Delete => "delete",
            RemoteOp::Configure => "configure",
        })
    }
}

/// Timeouts, retries and part size of a remote tier.
///
/// Retries are `object_store`'s ([`RetryConfig`]): a request that fails
/// with a connection error, a timeout or a 5xx answer is tried again up to
/// `max_retries` times with exponential backoff, for at most
/// `retry_timeout` in all; then the error is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Connecting to the server (default 5 s).
    pub connect_timeout: Duration,
    /// The longest wait for any read from the server, between the bytes
    /// of a download included (default 30 s): a stalled server fails
    /// after this, however large the object.
    pub read_timeout: Duration,
    /// One whole request, a download's body included (default 30 min).
    pub request_timeout: Duration,
    /// Retries of one request (default 3).
    pub max_retries: usize,
    /// The most time spent retrying one request (default 60 s).
    pub retry_timeout: Duration,
    /// The first backoff between retries (default 100 ms; it doubles up
    /// to 5 s).
    pub backoff: Duration,
    /// The size of each part of a multipart upload, and the largest
    /// archive uploaded in one request (default 8 MiB; S3 wants at least
    /// 5 MiB).
    pub part_size: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30 * 60),
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            part_size: 8 << 20,
        }
    }
}

impl Tuning {
    /// The [`RetryConfig`] these settings give.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.backoff,
                max_backoff: Duration::from_secs(5).max(self.backoff),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// The [`ClientOptions`] these settings give.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_read_timeout(self.read_timeout)
            .with_timeout(self.request_timeout)
    }
}

/// The bucket and prefix of `s3://BUCKET[/PREFIX]`.
pub(crate) fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let invalid = |reason| Error::InvalidConfig {
        key: "remote",
        reason,
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("the remote must be an s3://BUCKET[/PREFIX] URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("the remote URL names no bucket"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// An S3 store from `builder`, with create-only puts and copies turned
/// on, `tuning`'s timeouts and retries, the region `us-east-1` unless one
/// is set, and plain HTTP allowed when the endpoint is an `http://` URL.
/// Returns the store and the endpoint to name in messages.
pub(crate) fn s3(
    mut builder: AmazonS3Builder,
    tuning: &Tuning,
) -> Result<(Arc<dyn ObjectStore>, String)> {
    let bucket = builder
        .get_config_value(&AmazonS3ConfigKey::Bucket)
        .unwrap_or_default();
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .filter(|e| !e.is_empty());
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none_or(|r| r.is_empty())
    {
        builder = builder.with_region("us-east-1");
    }
    let shown = match &endpoint {
        Some(e) => format!("{}/{bucket}", without_userinfo(e.trim_end_matches('/'))),
        None => format!("s3://{bucket}"),
    };
    let mut options = tuning.client_options();
    if endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
    {
        options = options.with_allow_http(true);
    }
    let store = builder
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .with_retry(tuning.retry_config())
        .with_client_options(options)
        .build()
        .map_err(|e| Error::Remote {
            op: RemoteOp::Configure,
            key: String::new(),
            endpoint: shown.clone(),
            source: Box::new(e),
        })?;
    Ok((Arc::new(store), shown))
}

/// `scheme://user:secret@host/...` without `user:secret@`: an endpoint
/// named in a message must never carry credentials.
pub(crate) fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// The store, the runtime that drives it, and where it is.
pub(crate) struct Client {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pub(crate) endpoint: String,
    pub(crate) part_size: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store.to_string())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// How an upload ended.
pub(crate) enum Put {
    /// The object is ours, `bytes` long.
    Created(u64),
    /// Another writer's object was there first.
    Exists,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime:
        // there, let it shut down in the background.
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
        }
    }
}

impl Client {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime is taken only by drop")
    }

    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        endpoint: String,
        part_size: usize,
    ) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Remote {
                op: RemoteOp::Configure,
                key: String::new(),
                endpoint: endpoint.clone(),
                source: Box::new(e),
            })?;
        Ok(Client {
            store,
            runtime: Some(rt),
            endpoint,
            part_size: part_size.max(5 << 20),
        })
    }

    pub(crate) fn error(
        &self,
        op: RemoteOp,
        key: &Key,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Remote {
            op,
            key: key.to_string(),
            endpoint: self.endpoint.clone(),
            source: source.into(),
        }
    }

    /// Run `fut` to completion on our runtime. Refused (not a panic)
    /// from inside another runtime, where blocking would stall it.
    pub(crate) fn block_on<F: std::future::Future>(
        &self,
        op: RemoteOp,
        key: &Key,
        fut: F,
    ) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(self.error(
                op,
                key,
                "the remote tier blocks; call it outside an async runtime (e.g. from spawn_blocking)",
            ));
        }
        Ok(self.rt().block_on(fut))
    }

    /// A blocking reader of the object at `key`, or `None` if there is
    /// none; and its length.
    pub(crate) fn get(&self, key: &Key) -> Result<Option<(Body<'_>, u64)>> {
        match self.block_on(RemoteOp::Get, key, self.store.get(key))? {
            Ok(got) => {
                let size = got.meta.size;
                Ok(Some((
                    Body {
                        client: self,
                        stream: got.into_stream(),
                        chunk: Bytes::new(),
                        failed: None,
                    },
                    size,
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(RemoteOp::Get, key, e)),
        }
    }

    /// A writer whose bytes become the object at `key` once
    /// [`Sink::finish`] succeeds, and only if `key` is free then. Up to
    /// one part is kept in memory and put in one request; past that the
    /// archive goes up in parts to `staging`, which is then copied to
    /// `key` if free and deleted.
    pub(crate) fn sink<'a>(&'a self, key: &'a Key, staging: Key) -> Sink<'a> {
        Sink {
            client: self,
            key,
            staging,
            buf: Vec::new(),
            parts: None,
            failed: None,
            written: 0,
        }
    }
}

/// A download as a blocking [`Read`]: each chunk of the response body is
/// awaited on the client's runtime when the last one is used up, so at
/// most one chunk is held.
pub(crate) struct Body<'a> {
    client: &'a Client,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    /// The store's error behind a failed read, to report as it is.
    pub(crate) failed: Option<object_store::Error>,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.client.rt().block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    let message = e.to_string();
                    self.failed = Some(e);
                    return Err(io::Error::other(message));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// An upload as a blocking [`Write`] (see [`Client::sink`]).
pub(crate) struct Sink<'a> {
    client: &'a Client,
    key: &'a Key,
    staging: Key,
    buf: Vec<u8>,
    parts: Option<WriteMultipart>,
    /// The remote error behind a failed write, to report as it is.
    pub(crate) failed: Option<Error>,
    written: u64,
}

impl Sink<'_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let message = e.to_string();
        self.failed = Some(e);
        io::Error::other(message)
    }

    fn start_parts(&mut self) -> io::Result<()> {
        let client = self.client;
        let upload = match client.block_on(
            RemoteOp::Upload,
            &self.staging,
            client.store.put_multipart(&self.staging),
        ) {
            Ok(Ok(upload)) => upload,
            Ok(Err(e)) => {
                let e = client.error(RemoteOp::Upload, &self.staging, e);
                return Err(self.fail(e));
            }
            Err(e) => return Err(self.fail(e)),
        };
        let mut parts = WriteMultipart::new_with_chunk_size(upload, client.part_size);
        {
            // `write` spawns the part uploads on the runtime.
            let _inside = client.rt().enter();
            parts.write(&self.buf);
        }
        self.buf = Vec::new();
        self.parts = Some(parts);
        Ok(())
    }

    /// Publish the object: `Put::Exists` when another writer's is there.
    /// On an error nothing is left at `key`, and what was uploaded in
    /// parts is aborted (invisible) or deleted.
    pub(crate) fn finish(mut self) -> Result<Put> {
        let client = self.client;
        let key = self.key;
        let Some(parts) = self.parts.take() else {
            let payload = PutPayload::from(std::mem::take(&mut self.buf));
            let put = client.store.put_opts(key, payload, PutMode::Create.into());
            return match client.block_on(RemoteOp::Put, key, put)? {
                Ok(_) => Ok(Put::Created(self.written)),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Exists),
                Err(e) => Err(client.error(RemoteOp::Put, key, e)),
            };
        };
        let staging = self.staging.clone();
        match client.block_on(RemoteOp::Upload, &staging, parts.finish())? {
            Ok(_) => {}
            Err(e) => return Err(client.error(RemoteOp::Upload, &staging, e)),
        }
        let copied = client.block_on(
            RemoteOp::Copy,
            key,
            client.store.copy_if_not_exists(&staging, key),
        );
        // The staging object is garbage whatever happened.
        let _ = client.block_on(RemoteOp::Delete, &staging, client.store.delete(&staging));
        match copied? {
            Ok(()) => Ok(Put::Created(self.written)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Exists),
            Err(e) => Err(client.error(RemoteOp::Copy, key, e)),
        }
    }

    /// Give up: abort the multipart upload, if one was started.
    pub(crate) fn abort(mut self) {
        if let Some(parts) = self.parts.take() {
            let _ = self
                .client
                .block_on(RemoteOp::Upload, &self.staging, parts.abort());
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(e.to_string()));
        }
        self.written += data.len() as u64;
        match self.parts.as_mut() {
            None => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > self.client.part_size {
                    self.start_parts()?;
                }
            }
            Some(parts) => {
                let client = self.client;
                {
                    let _inside = client.rt().enter();
                    parts.write(data);
                }
                // Two parts in flight at most: memory stays at about
                // three parts whatever the archive's size.
                let waited =
                    client.block_on(RemoteOp::Upload, &self.staging, parts.wait_for_capacity(2));
                match waited {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let e = client.error(RemoteOp::Upload, &self.staging, e);
                        return Err(self.fail(e));
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_in_a_message_never_carries_credentials() {
        assert_eq!(
            without_userinfo("http://AKID:secret@127.0.0.1:9000/bucket"),
            "http://127.0.0.1:9000/bucket"
        );
        assert_eq!(without_userinfo("https://s3.example"), "https://s3.example");
        assert_eq!(without_userinfo("no scheme"), "no scheme");
    }
}
