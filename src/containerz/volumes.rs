//! CreateVolume, RemoveVolume, ListVolume over [`crate::manager::volumes`]: the local driver
//! (bind mounts of directories under the TPCM store, or of an existing directory) and custom
//! drivers (a started plugin's volume driver, DS_CUSTOM).

use super::{Shared, on_manager, proto};
use crate::manager::store::Store;
use crate::manager::volumes::{self, VolumeRequest};
use crate::runtime::Runtime;
use proto::create_volume_request::Options;
use std::sync::Arc;
use tonic::Status;

/// The custom option that names the plugin instance serving a DS_CUSTOM volume (tpcm's choice
/// where the proto is silent); without it, the plugin named [`DEFAULT_CUSTOM_DRIVER`].
pub const DRIVER_OPTION: &str = "driver";
/// The plugin instance a DS_CUSTOM volume goes to when its options name none (the reference
/// server's `custom:latest`).
pub const DEFAULT_CUSTOM_DRIVER: &str = "custom";

/// CreateVolume: DS_LOCAL (or unspecified): a directory bound into containers; DS_CUSTOM: a
/// volume of a started plugin's volume driver (`custom_options.options`, less `driver`, go to
/// the driver; `driver` names the plugin, default `custom`).
pub(super) async fn create<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::CreateVolumeRequest,
) -> Result<proto::CreateVolumeResponse, Status> {
    let driver = proto::Driver::try_from(r.driver).map_err(|_| {
        Status::invalid_argument(format!(
            "CreateVolume: driver {} is not one of the proto's",
            r.driver
        ))
    })?;
    if driver == proto::Driver::DsCustom {
        let mut options = match r.options {
            Some(Options::CustomOptions(o)) => o.options,
            None => Default::default(),
            Some(Options::LocalMountOptions(_)) => {
                return Err(Status::invalid_argument(
                    "CreateVolume: DS_CUSTOM takes custom_options, not local_mount_options",
                ));
            }
        };
        let plugin = options
            .remove(DRIVER_OPTION)
            .unwrap_or_else(|| DEFAULT_CUSTOM_DRIVER.to_string());
        let request = volumes::DriverVolumeRequest {
            name: r.name.clone(),
            plugin,
            options: options.into_iter().collect(),
            labels: r.labels.into_iter().collect(),
        };
        let volume = on_manager(shared, move |s| async move {
            volumes::create_with_driver(&s.settings, &request).await
        })
        .await?;
        tracing::info!(volume = %volume.name, driver = %volume.driver, "CreateVolume created a custom volume");
        return Ok(proto::CreateVolumeResponse { name: volume.name });
    }
    let mut request = VolumeRequest {
        name: r.name.clone(),
        labels: r.labels.into_iter().collect(),
        ..Default::default()
    };
    match r.options {
        None => {}
        Some(Options::CustomOptions(_)) => {
            return Err(Status::invalid_argument(
                "CreateVolume: custom_options need driver DS_CUSTOM",
            ));
        }
        Some(Options::LocalMountOptions(o)) => {
            request.options = o.options;
            if !o.mountpoint.is_empty() {
                request.mountpoint = Some(o.mountpoint.into());
            }
        }
    }
    let volume = on_manager(shared, move |s| async move {
        volumes::create(&Store::new(&s.settings.root), &request)
    })
    .await?;
    tracing::info!(volume = %volume.name, "CreateVolume created a volume");
    Ok(proto::CreateVolumeResponse { name: volume.name })
}

/// RemoveVolume: FAILED_PRECONDITION while a container binds it, unless `force`.
pub(super) async fn remove<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::RemoveVolumeRequest,
) -> Result<proto::RemoveVolumeResponse, Status> {
    on_manager(shared, move |s| async move {
        // The proto: removing a volume that does not exist is a no-op.
        volumes::validate_name(&r.name)?;
        if volumes::get(&Store::new(&s.settings.root), &r.name)?.is_none() {
            return Ok(());
        }
        volumes::remove(&s.settings, &r.name, r.force).await
    })
    .await?;
    Ok(proto::RemoveVolumeResponse {})
}

/// ListVolume. Filters: `name`, `driver`, `label` (`key` or `key=value`).
pub(super) async fn list<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::ListVolumeRequest,
) -> Result<super::ResponseStream<proto::ListVolumeResponse>, Status> {
    super::check_filter_keys(
        "ListVolume",
        r.filter.iter().map(|f| f.key.as_str()),
        &["name", "driver", "label"],
    )?;
    let all = on_manager(
        shared,
        |s| async move { volumes::list(&Store::new(&s.settings.root)) },
    )
    .await?;
    let out: Vec<_> = all
        .into_iter()
        .filter(|v| {
            r.filter.iter().all(|f| {
                f.value.iter().any(|x| match f.key.as_str() {
                    "name" => x == &v.name,
                    "driver" => x == &v.driver,
                    _ => match x.split_once('=') {
                        Some((k, val)) => v.labels.get(k).is_some_and(|l| l == val),
                        None => v.labels.contains_key(x),
                    },
                })
            })
        })
        .map(|v| {
            Ok(proto::ListVolumeResponse {
                name: v.name,
                created: Some(prost_types::Timestamp {
                    seconds: v.created as i64,
                    nanos: 0,
                }),
                driver: v.driver,
                options: v.options.into_iter().collect(),
                labels: v.labels.into_iter().collect(),
            })
        })
        .collect();
    Ok(Box::pin(tokio_stream::iter(out)))
}
