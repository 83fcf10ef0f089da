//! Content store: streaming blob upload (the bidirectional `Write` call), labels, reads.

use super::{Containerd, Error, Lease};
use crate::archive::Digest;
use containerd_client::services::v1::{
    AbortRequest, Info, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One message from the code producing a blob to its upload task.
pub(crate) enum Upload {
    /// The next bytes, in order.
    Data(Arc<Vec<u8>>),
    /// All bytes were sent: commit them under this digest with these labels.
    Commit {
        digest: Digest,
        labels: HashMap<String, String>,
    },
}

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// We wrote and committed the blob.
    Written,
    /// The content store already had it (dedup); its labels still need setting.
    AlreadyExisted,
}

impl Containerd {
    /// Uploads one blob fed through `rx`. Every `WRITE` carries its offset (a write at offset 0
    /// truncates, design §4); the final `COMMIT` makes containerd verify size and digest. If the
    /// producer goes away without `Commit`, the ingest is aborted so nothing half-written stays.
    pub(crate) async fn upload_blob(
        &self,
        lease: &Lease,
        reference: String,
        total: u64,
        expected: Option<Digest>,
        mut rx: mpsc::Receiver<Upload>,
    ) -> Result<UploadOutcome, Error> {
        let op = format!("content write {reference}");
        let expected_str = expected.as_ref().map(|d| d.to_string()).unwrap_or_default();
        let (req_tx, req_rx) = mpsc::channel::<WriteContentRequest>(4);
        let mut offset: u64 = 0;
        let to_request = |msg: Upload, offset: &mut u64| match msg {
            Upload::Data(data) => {
                let len = data.len() as u64;
                let req = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total: total as i64,
                    expected: expected_str.clone(),
                    offset: *offset as i64,
                    // The extraction usually let go of the chunk by now (it is faster than
                    // containerd's ingest), so the bytes move instead of being copied.
                    data: Arc::unwrap_or_clone(data),
                    labels: HashMap::new(),
                };
                *offset += len;
                (req, false)
            }
            Upload::Commit { digest, labels } => (
                WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference.clone(),
                    total: total as i64,
                    expected: digest.to_string(),
                    offset: *offset as i64,
                    data: Vec::new(),
                    labels,
                },
                true,
            ),
        };
        let Some(first) = rx.recv().await else {
            return Err(Error::Unexpected {
                op,
                detail: "producer stopped before sending anything".into(),
            });
        };
        let (first, mut committed) = to_request(first, &mut offset);
        req_tx
            .send(first)
            .await
            .expect("receiver is alive until the call starts");
        // containerd answers the first message before the call's headers arrive, so the request
        // stream must already hold it (it does) when we await the call.
        let response = self
            .content()
            .write(self.request(ReceiverStream::new(req_rx), Some(lease)))
            .await;
        let mut responses = match response {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(UploadOutcome::AlreadyExisted),
            Err(s) => {
                self.abort_ingest(&reference).await;
                return Err(Error::rpc(op)(s));
            }
        };
        let drain = tokio::spawn(async move {
            while responses.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        });
        while !committed {
            let Some(msg) = rx.recv().await else { break };
            let (req, is_commit) = to_request(msg, &mut offset);
            committed = is_commit;
            if req_tx.send(req).await.is_err() {
                break; // the call ended early; its status comes from `drain`
            }
        }
        drop(req_tx);
        let result = drain.await.map_err(|e| Error::Unexpected {
            op: op.clone(),
            detail: e.to_string(),
        })?;
        match result {
            Ok(()) if committed => Ok(UploadOutcome::Written),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(UploadOutcome::AlreadyExisted),
            Ok(()) => {
                self.abort_ingest(&reference).await;
                Err(Error::Unexpected {
                    op,
                    detail: "upload abandoned before commit".into(),
                })
            }
            Err(s) => {
                self.abort_ingest(&reference).await;
                Err(Error::rpc(op)(s))
            }
        }
    }

    /// Best-effort removal of a partial ingest; a missing one is fine.
    async fn abort_ingest(&self, reference: &str) {
        let _ = self
            .content()
            .abort(self.request(
                AbortRequest {
                    r#ref: reference.to_string(),
                },
                None,
            ))
            .await;
    }

    /// Uploads a small in-memory blob (manifests, configs) with its labels.
    pub(crate) async fn write_small_blob(
        &self,
        lease: &Lease,
        reference: String,
        digest: &Digest,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Upload::Data(Arc::new(bytes.to_vec())))
            .await
            .expect("channel has room");
        tx.send(Upload::Commit {
            digest: digest.clone(),
            labels: labels.clone(),
        })
        .await
        .expect("channel has room");
        drop(tx);
        match self
            .upload_blob(lease, reference, bytes.len() as u64, Some(digest.clone()), rx)
            .await?
        {
            UploadOutcome::Written => Ok(()),
            UploadOutcome::AlreadyExisted => self.set_content_labels(digest, labels).await,
        }
    }

    /// Sets labels on existing content (used when an upload found the blob already there).
    pub(crate) async fn set_content_labels(
        &self,
        digest: &Digest,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info {
            digest: digest.to_string(),
            labels,
            ..Default::default()
        };
        self.content()
            .update(self.request(
                UpdateRequest {
                    info: Some(info),
                    update_mask: Some(prost_types::FieldMask { paths }),
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("label content {digest}")))?;
        Ok(())
    }

    /// Opens a blob in the content store as a stream of chunks.
    async fn read_stream(
        &self,
        digest: &Digest,
    ) -> Result<
        (
            tonic::Streaming<containerd_client::services::v1::ReadContentResponse>,
            String,
        ),
        Error,
    > {
        let op = format!("content read {digest}");
        let req = ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        };
        let stream = self
            .content()
            .read(self.request(req, None))
            .await
            .map_err(Error::rpc(op.clone()))?
            .into_inner();
        Ok((stream, op))
    }

    /// Streams a blob out of the content store in chunks, sending each to `tx`.
    pub(crate) async fn read_blob(
        &self,
        digest: &Digest,
        tx: mpsc::Sender<Arc<Vec<u8>>>,
    ) -> Result<(), Error> {
        let (mut stream, op) = self.read_stream(digest).await?;
        while let Some(chunk) = stream.message().await.map_err(Error::rpc(op.clone()))? {
            // A closed receiver means the consumer failed; it reports its own error.
            if tx.send(Arc::new(chunk.data)).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Reads a small blob whole (manifests, configs), refusing anything over `limit` bytes.
    pub(crate) async fn read_small_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let (mut stream, op) = self.read_stream(digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(Error::rpc(op.clone()))? {
            out.extend_from_slice(&chunk.data);
            if out.len() as u64 > limit {
                return Err(Error::Unexpected {
                    op,
                    detail: format!("blob is larger than {limit} bytes"),
                });
            }
        }
        Ok(out)
    }
}
