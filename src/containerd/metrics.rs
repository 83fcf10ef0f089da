//! A task's usage counters (`Tasks.Metrics`) and processes (`Tasks.ListPids`).
//!
//! Why containerd's metrics and not the cgroup files (cgroups-rs): the shim already reads the
//! cgroup wherever it is — v1 or v2, cgroupfs or systemd driver, whatever the runtime's cgroup
//! parent — so tpcm needs no knowledge of the host's hierarchy, and no second crate (cgroups-rs
//! brings its own `nix` and, since 0.4, a D-Bus stack) goes into a binary that must stay small.
//! containerd-client has no types for the metrics themselves: the messages below declare the
//! fields tpcm reads, with the field numbers of containerd/cgroups' `stats/v1/metrics.proto`
//! (`io.containerd.cgroups.v1.Metrics`) and `v2/stats/metrics.proto`
//! (`io.containerd.cgroups.v2.Metrics`) as containerd 1.6 vendors them; protobuf skips the rest.

use super::{Containerd, Error};
use crate::runtime::ContainerMetrics;
use containerd_client::services::v1::{ListPidsRequest, MetricsRequest};
use prost::Message;

/// The type of the metrics a cgroup v1 host reports.
const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
/// The type of the metrics a cgroup v2 host reports.
const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";
/// cgroup v1 reports "no memory limit" as the largest page-aligned i64.
const V1_NO_LIMIT: u64 = 0x7FFF_FFFF_FFFF_F000;

/// cgroup v1 metrics: the fields tpcm reads.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1Metrics {
    #[prost(message, optional, tag = "2")]
    pub pids: Option<PidsStat>,
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<V1Cpu>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<V1Memory>,
    #[prost(message, optional, tag = "5")]
    pub blkio: Option<V1Blkio>,
}

/// Processes and their limit (0 = none), both versions.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PidsStat {
    #[prost(uint64, tag = "1")]
    pub current: u64,
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1Cpu {
    #[prost(message, optional, tag = "1")]
    pub usage: Option<V1CpuUsage>,
}

/// CPU time in nanoseconds.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1CpuUsage {
    #[prost(uint64, tag = "1")]
    pub total: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1Memory {
    #[prost(uint64, tag = "30")]
    pub total_inactive_file: u64,
    #[prost(message, optional, tag = "33")]
    pub usage: Option<V1MemoryEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1MemoryEntry {
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    #[prost(uint64, tag = "2")]
    pub usage: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1Blkio {
    #[prost(message, repeated, tag = "1")]
    pub io_service_bytes_recursive: Vec<V1BlkioEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V1BlkioEntry {
    #[prost(string, tag = "1")]
    pub op: String,
    #[prost(uint64, tag = "5")]
    pub value: u64,
}

/// cgroup v2 metrics: the fields tpcm reads.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct V2Metrics {
    #[prost(message, optional, tag = "1")]
    pub pids: Option<PidsStat>,
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<V2Cpu>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<V2Memory>,
    #[prost(message, optional, tag = "6")]
    pub io: Option<V2Io>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V2Cpu {
    #[prost(uint64, tag = "1")]
    pub usage_usec: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V2Memory {
    #[prost(uint64, tag = "13")]
    pub inactive_file: u64,
    #[prost(uint64, tag = "32")]
    pub usage: u64,
    #[prost(uint64, tag = "33")]
    pub usage_limit: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V2Io {
    #[prost(message, repeated, tag = "1")]
    pub usage: Vec<V2IoEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct V2IoEntry {
    #[prost(uint64, tag = "3")]
    pub rbytes: u64,
    #[prost(uint64, tag = "4")]
    pub wbytes: u64,
}

/// Turns a metrics message (its type URL and bytes) into tpcm's counters.
pub(crate) fn decode(type_url: &str, bytes: &[u8]) -> Result<ContainerMetrics, String> {
    let bad = |e: prost::DecodeError| format!("{type_url}: {e}");
    let limit = |n: u64| (n != 0).then_some(n);
    if type_url.ends_with(V1_METRICS) {
        let m = V1Metrics::decode(bytes).map_err(bad)?;
        let memory = m.memory.unwrap_or_default();
        let usage = memory.usage.unwrap_or_default();
        let pids = m.pids.unwrap_or_default();
        let blkio = m.blkio.unwrap_or_default().io_service_bytes_recursive;
        let sum = |op: &str| {
            blkio
                .iter()
                .filter(|e| e.op.eq_ignore_ascii_case(op))
                .map(|e| e.value)
                .sum()
        };
        Ok(ContainerMetrics {
            cgroup_version: 1,
            cpu_usage_ns: m.cpu.and_then(|c| c.usage).unwrap_or_default().total,
            memory_usage: usage.usage,
            memory_inactive_file: memory.total_inactive_file,
            memory_limit: limit(usage.limit).filter(|l| *l < V1_NO_LIMIT),
            pids: pids.current,
            pids_limit: limit(pids.limit),
            block_read: sum("read"),
            block_write: sum("write"),
        })
    } else if type_url.ends_with(V2_METRICS) {
        let m = V2Metrics::decode(bytes).map_err(bad)?;
        let memory = m.memory.unwrap_or_default();
        let pids = m.pids.unwrap_or_default();
        let io = m.io.unwrap_or_default().usage;
        Ok(ContainerMetrics {
            cgroup_version: 2,
            cpu_usage_ns: m.cpu.unwrap_or_default().usage_usec.saturating_mul(1000),
            memory_usage: memory.usage,
            memory_inactive_file: memory.inactive_file,
            // "max" is reported as the largest u64.
            memory_limit: limit(memory.usage_limit).filter(|l| *l != u64::MAX),
            pids: pids.current,
            pids_limit: limit(pids.limit),
            block_read: io.iter().map(|e| e.rbytes).sum(),
            block_write: io.iter().map(|e| e.wbytes).sum(),
        })
    } else {
        Err(format!("metrics of an unknown type {type_url:?}"))
    }
}

impl Containerd {
    /// The usage counters of container `id`'s task; `None` when it has no task.
    pub(crate) async fn task_metrics(&self, id: &str) -> Result<Option<ContainerMetrics>, Error> {
        let req = MetricsRequest {
            filters: vec![format!("id=={id:?}")],
        };
        let metrics = self
            .tasks()
            .metrics(self.request(req, None))
            .await
            .map_err(Error::rpc(format!("task metrics {id}")))?
            .into_inner()
            .metrics;
        let Some(data) = metrics.into_iter().find(|m| m.id == id).and_then(|m| m.data) else {
            return Ok(None);
        };
        decode(&data.type_url, &data.value)
            .map(Some)
            .map_err(|detail| Error::Unexpected {
                op: format!("task metrics {id}"),
                detail,
            })
    }

    /// Host pids of container `id`'s processes (none without a task).
    pub(crate) async fn task_pids(&self, id: &str) -> Result<Vec<u32>, Error> {
        let req = ListPidsRequest {
            container_id: id.into(),
        };
        match self.tasks().list_pids(self.request(req, None)).await {
            Ok(r) => Ok(r.into_inner().processes.into_iter().map(|p| p.pid).collect()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Err(s) => Err(Error::rpc(format!("task pids {id}"))(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v2 host's metrics, as the shim encodes them (fields by their upstream numbers,
    /// written out byte by byte so the test does not reuse the decoder's own declarations):
    /// pids 3 of max 64; 1.5 s of CPU; 10 MiB used, 1 MiB inactive file, limit 64 MiB; I/O of
    /// two devices.
    #[test]
    fn v2_metrics_decode_from_their_wire_form() {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        fn field(tag: u64, n: u64, out: &mut Vec<u8>) {
            varint(tag << 3, out);
            varint(n, out);
        }
        fn message(tag: u64, body: &[u8], out: &mut Vec<u8>) {
            varint((tag << 3) | 2, out);
            varint(body.len() as u64, out);
            out.extend_from_slice(body);
        }
        let mut pids = Vec::new();
        field(1, 3, &mut pids);
        field(2, 64, &mut pids);
        let mut cpu = Vec::new();
        field(1, 1_500_000, &mut cpu); // usage_usec
        field(2, 1_000_000, &mut cpu); // user_usec (ignored)
        let mut memory = Vec::new();
        field(1, 8 << 20, &mut memory); // anon (ignored)
        field(13, 1 << 20, &mut memory); // inactive_file
        field(32, 10 << 20, &mut memory); // usage
        field(33, 64 << 20, &mut memory); // usage_limit
        let mut io = Vec::new();
        for (r, w) in [(4096u64, 8192u64), (100, 0)] {
            let mut entry = Vec::new();
            field(1, 8, &mut entry);
            field(3, r, &mut entry);
            field(4, w, &mut entry);
            message(1, &entry, &mut io);
        }
        let mut m = Vec::new();
        message(1, &pids, &mut m);
        message(2, &cpu, &mut m);
        message(4, &memory, &mut m);
        message(6, &io, &mut m);
        let got = decode("io.containerd.cgroups.v2.Metrics", &m).unwrap();
        assert_eq!(
            got,
            ContainerMetrics {
                cgroup_version: 2,
                cpu_usage_ns: 1_500_000_000,
                memory_usage: 10 << 20,
                memory_inactive_file: 1 << 20,
                memory_limit: Some(64 << 20),
                pids: 3,
                pids_limit: Some(64),
                block_read: 4196,
                block_write: 8192,
            }
        );
        // No limits: "max" memory, pids 0.
        let mut memory = Vec::new();
        field(32, 5, &mut memory);
        field(33, u64::MAX, &mut memory);
        let mut m = Vec::new();
        message(4, &memory, &mut m);
        let got = decode("io.containerd.cgroups.v2.Metrics", &m).unwrap();
        assert_eq!((got.memory_limit, got.pids_limit), (None, None));
    }

    #[test]
    fn v1_metrics_take_the_usage_entry_and_sum_blkio_by_operation() {
        let m = V1Metrics {
            pids: Some(PidsStat { current: 2, limit: 0 }),
            cpu: Some(V1Cpu {
                usage: Some(V1CpuUsage { total: 42 }),
            }),
            memory: Some(V1Memory {
                total_inactive_file: 7,
                usage: Some(V1MemoryEntry {
                    limit: V1_NO_LIMIT,
                    usage: 100,
                }),
            }),
            blkio: Some(V1Blkio {
                io_service_bytes_recursive: ["Read", "Write", "Read", "Total"]
                    .iter()
                    .zip([1u64, 2, 3, 6])
                    .map(|(op, value)| V1BlkioEntry {
                        op: op.to_string(),
                        value,
                    })
                    .collect(),
            }),
        };
        let got = decode("io.containerd.cgroups.v1.Metrics", &m.encode_to_vec()).unwrap();
        assert_eq!(
            (
                got.cpu_usage_ns,
                got.memory_usage,
                got.memory_limit,
                got.pids_limit
            ),
            (42, 100, None, None)
        );
        assert_eq!((got.block_read, got.block_write), (4, 2));
        assert!(decode("something.Else", &[]).is_err());
    }
}
