//! containerd's event stream, narrowed to what tpcm reacts to: task exits (design §4:
//! `Events.Subscribe` filtered on the namespace and topic `/tasks/exit`). The gNOI server's
//! restart supervisor is fed from here.

use super::{Containerd, Error};
use containerd_client::events::TaskExit;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{ListContainersRequest, SubscribeRequest};
use prost::Message;

/// The event topic of a task's main process exiting.
const TASK_EXIT: &str = "/tasks/exit";

impl Containerd {
    /// Sends `(container id, exit status)` for every main-process exit in this namespace until
    /// the stream breaks (containerd restarted: the error says so) or `tx` is closed (`Ok`).
    /// `subscribed` is told once the subscription stands.
    pub(crate) async fn forward_exits(
        &self,
        tx: tokio::sync::mpsc::Sender<(String, u32)>,
        subscribed: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), Error> {
        let filter = format!("namespace=={:?},topic=={TASK_EXIT:?}", self.namespace);
        let mut stream = EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest {
                filters: vec![filter],
            })
            .await
            .map_err(Error::rpc("events subscribe"))?
            .into_inner();
        let _ = subscribed.send(());
        loop {
            let envelope = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) => {
                    return Err(Error::Unexpected {
                        op: "events subscribe".into(),
                        detail: "containerd closed the event stream".into(),
                    });
                }
                Err(s) => return Err(Error::rpc("events subscribe")(s)),
            };
            let Some(any) = envelope.event else { continue };
            let Ok(exit) = TaskExit::decode(any.value.as_slice()) else {
                continue;
            };
            // Exec'd processes (hooks, health probes) exit too; only the main process counts.
            if exit.id != exit.container_id {
                continue;
            }
            if tx.send((exit.container_id, exit.exit_status)).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Every container in the namespace with the image it was made from.
    pub(crate) async fn container_images(&self) -> Result<Vec<(String, String)>, Error> {
        let list = self
            .containers()
            .list(self.request(ListContainersRequest { filters: vec![] }, None))
            .await
            .map_err(Error::rpc("container list"))?
            .into_inner();
        Ok(list.containers.into_iter().map(|c| (c.id, c.image)).collect())
    }
}
