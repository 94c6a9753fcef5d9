//! Host facts: what a host is and what it already runs, gathered in one round trip.
//!
//! One shell script prints `key=value` lines; the parser here is the only place that knows their
//! names. Reading sysfs and procfs needs no extra packages; `lspci` and `nvidia-smi` are used
//! when they exist, because they name GPUs better than sysfs does.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::k0s::K0sStatus;
use crate::shell::quote;

/// What airlock learned about a host.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub hostname: String,
    pub os_id: String,
    pub os_version: String,
    pub os_name: String,
    pub kernel: String,
    /// The architecture in OCI's words: `amd64`, `arm64`.
    pub architecture: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Free bytes on the file system of the k0s data directory.
    pub data_dir_free_bytes: u64,
    /// The host's clock, in seconds since the epoch, when the script ran.
    pub clock: i64,
    /// The host's clock minus this machine's, in seconds; set by the phase that gathers facts.
    pub clock_skew_seconds: i64,
    pub cgroup_version: u8,
    pub kvm: bool,
    pub iommu_groups: u32,
    pub gpus: Vec<Gpu>,
    /// The NVIDIA driver version when a host driver is loaded.
    pub nvidia_driver: Option<String>,
    /// Whether a GPU supports MIG partitioning, as `nvidia-smi` reports it.
    pub mig_capable: bool,
    /// Whether MIG mode is on for a GPU.
    pub mig_enabled: bool,
    /// The output of `k0s version` when a k0s binary is installed.
    pub k0s_binary_version: Option<String>,
    /// The installed k0s service, `k0scontroller` or `k0sworker`.
    pub k0s_service: Option<String>,
    /// `k0s status -o json` while k0s runs.
    #[serde(skip)]
    pub k0s_status: Option<K0sStatus>,
}

/// An NVIDIA GPU (PCI vendor 10de).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// The PCI address, `0000:3b:00.0`.
    pub address: String,
    /// The PCI device id in upper-case hex, `2331`.
    pub device_id: String,
    /// The name in the PCI ID database, such as `GH100 [H100 PCIe]`; empty when unknown.
    pub name: String,
}

/// Builds the script that prints the facts of a host whose k0s lives at `k0s_path` with data in
/// `data_dir`.
pub fn script(k0s_path: &str, data_dir: &str) -> String {
    let k0s = quote(k0s_path);
    let data_dir = quote(data_dir);
    format!(
        r#"
. /etc/os-release 2>/dev/null
echo "os.id=$ID"; echo "os.version=$VERSION_ID"; echo "os.name=$PRETTY_NAME"
echo "kernel=$(uname -r)"; echo "machine=$(uname -m)"; echo "hostname=$(hostname)"
echo "cpus=$(nproc)"
echo "memory.kib=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)"
echo "clock=$(date +%s)"
echo "cgroup=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
if [ -c /dev/kvm ]; then echo "kvm=yes"; else echo "kvm=no"; fi
echo "iommu.groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
d={data_dir}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk.free.kib=$(df -Pk "$d" | awk 'NR==2 {{print $4}}')"
if command -v lspci >/dev/null 2>&1; then
  lspci -Dvmmnn -d 10de: 2>/dev/null | while read -r line; do [ -n "$line" ] && echo "gpu.lspci=$line"; done
else
  for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor" 2>/dev/null)" = 0x10de ] || continue
    case "$(cat "$dev/class")" in 0x0300*|0x0302*) echo "gpu.sysfs=${{dev##*/}} $(cat "$dev/device")";; esac
  done
fi
if [ -r /sys/module/nvidia/version ]; then echo "nvidia.driver=$(cat /sys/module/nvidia/version)";
elif command -v nvidia-smi >/dev/null 2>&1; then echo "nvidia.driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)"; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=mig.mode.current --format=csv,noheader 2>/dev/null | while read -r mode; do echo "gpu.mig=$mode"; done
fi
if [ -x {k0s} ]; then echo "k0s.version=$({k0s} version 2>/dev/null)"; fi
for service in k0scontroller k0sworker; do
  for dir in /etc/systemd/system /etc/init.d; do
    if [ -e "$dir/$service.service" ] || [ -e "$dir/$service" ]; then echo "k0s.service=$service"; fi
  done
done
if [ -x {k0s} ]; then status=$({k0s} status -o json 2>/dev/null | tr -d '\n'); [ -n "$status" ] && echo "k0s.status=$status"; fi
true
"#
    )
}

/// A line of the facts script that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("unexpected facts output: {0}")]
pub struct FactsError(String);

/// Parses the script's output.
pub fn parse(output: &str) -> Result<Facts, FactsError> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in output.lines().filter(|line| !line.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| FactsError(line.to_string()))?;
        values.entry(key).or_default().push(value.trim());
    }
    let one = |key: &str| {
        values
            .get(key)
            .and_then(|v| v.first())
            .copied()
            .unwrap_or_default()
            .to_string()
    };
    let number = |key: &str| one(key).parse::<u64>().unwrap_or(0);

    let mut gpus = parse_lspci(
        values
            .get("gpu.lspci")
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    gpus.extend(
        values
            .get("gpu.sysfs")
            .into_iter()
            .flatten()
            .filter_map(|line| parse_sysfs(line)),
    );
    let mig_modes = values.get("gpu.mig").map(Vec::as_slice).unwrap_or_default();
    let k0s_status = values
        .get("k0s.status")
        .and_then(|v| v.first())
        .and_then(|json| K0sStatus::parse(json).ok());

    Ok(Facts {
        hostname: one("hostname").to_lowercase(),
        os_id: one("os.id"),
        os_version: one("os.version"),
        os_name: one("os.name"),
        kernel: one("kernel"),
        architecture: oci_architecture(&one("machine")),
        cpus: number("cpus") as u32,
        memory_bytes: number("memory.kib") * 1024,
        data_dir_free_bytes: number("disk.free.kib") * 1024,
        clock: one("clock").parse().unwrap_or(0),
        clock_skew_seconds: 0,
        cgroup_version: if one("cgroup") == "cgroup2fs" { 2 } else { 1 },
        kvm: one("kvm") == "yes",
        iommu_groups: number("iommu.groups") as u32,
        gpus,
        nvidia_driver: Some(one("nvidia.driver")).filter(|v| !v.is_empty()),
        mig_capable: mig_modes
            .iter()
            .any(|mode| *mode == "Enabled" || *mode == "Disabled"),
        mig_enabled: mig_modes.contains(&"Enabled"),
        k0s_binary_version: Some(one("k0s.version")).filter(|v| !v.is_empty()),
        k0s_service: Some(one("k0s.service")).filter(|v| !v.is_empty()),
        k0s_status: k0s_status.filter(K0sStatus::is_running),
    })
}

/// Maps `uname -m` to OCI architecture names.
fn oci_architecture(machine: &str) -> String {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv7" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
    .to_string()
}

/// Reads the records of `lspci -Dvmmnn -d 10de:`, one `Key: value` line each, a record starting
/// at `Slot:`, such as `Slot: 0000:3b:00.0`, `Class: 3D controller [0302]`,
/// `Device: GH100 [H100 PCIe] [2331]`. Only display (0300) and 3D (0302) controllers are GPUs;
/// the GPU's audio function is skipped.
fn parse_lspci(lines: &[&str]) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    let mut record: BTreeMap<&str, &str> = BTreeMap::new();
    let mut finish = |record: &BTreeMap<&str, &str>| {
        let (Some(slot), Some(class), Some(device)) = (
            record.get("Slot"),
            record.get("Class"),
            record.get("Device"),
        ) else {
            return;
        };
        let class_code = bracketed_id(class).unwrap_or_default();
        if !(class_code.starts_with("0300") || class_code.starts_with("0302")) {
            return;
        }
        let device_id = bracketed_id(device).unwrap_or_default().to_uppercase();
        let name = device
            .rsplit_once(" [")
            .map_or(*device, |(name, _)| name)
            .trim()
            .to_string();
        gpus.push(Gpu {
            address: slot.to_string(),
            device_id,
            name,
        });
    };
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key == "Slot" && !record.is_empty() {
            finish(&record);
            record.clear();
        }
        record.insert(key, value.trim());
    }
    if !record.is_empty() {
        finish(&record);
    }
    gpus
}

/// The hex id in the last `[...]` of an lspci field, such as `2331` in `GH100 [H100 PCIe] [2331]`.
fn bracketed_id(field: &str) -> Option<&str> {
    let (_, last) = field.rsplit_once('[')?;
    last.strip_suffix(']')
}

/// Reads one sysfs line: `0000:3b:00.0 0x2331`.
fn parse_sysfs(line: &str) -> Option<Gpu> {
    let (address, device) = line.split_once(' ')?;
    let device = device.trim().trim_start_matches("0x").to_uppercase();
    Some(Gpu {
        address: address.to_string(),
        device_id: device,
        // sysfs has no names; the PCI ID database is what lspci adds.
        name: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"os.id=debian
os.version=12
os.name=Debian GNU/Linux 12 (bookworm)
kernel=6.1.0-18-amd64
machine=x86_64
hostname=Lab-2
cpus=2
memory.kib=24576000
clock=1796419200
cgroup=cgroup2fs
kvm=no
iommu.groups=0
disk.free.kib=1048576
gpu.lspci=Slot:	0000:3b:00.0
gpu.lspci=Class:	3D controller [0302]
gpu.lspci=Vendor:	NVIDIA Corporation [10de]
gpu.lspci=Device:	GH100 [H100 PCIe] [2331]
gpu.lspci=Slot:	0000:3b:00.1
gpu.lspci=Class:	Audio device [0403]
gpu.lspci=Vendor:	NVIDIA Corporation [10de]
gpu.lspci=Device:	Device [22a3]
gpu.mig=Disabled
nvidia.driver=580.65.06
k0s.version=v1.35.3+k0s.0
k0s.service=k0sworker
k0s.status={"Version":"v1.35.3+k0s.0","Pid":12,"Role":"worker"}
"#;

    #[test]
    fn facts_parse_from_script_output() {
        let facts = parse(OUTPUT).unwrap();
        assert_eq!(facts.hostname, "lab-2");
        assert_eq!(facts.architecture, "amd64");
        assert_eq!(facts.memory_bytes, 24576000 * 1024);
        assert_eq!(facts.data_dir_free_bytes, 1 << 30);
        assert_eq!(facts.cgroup_version, 2);
        assert!(!facts.kvm);
        assert_eq!(facts.nvidia_driver.as_deref(), Some("580.65.06"));
        assert_eq!(facts.k0s_service.as_deref(), Some("k0sworker"));
        assert_eq!(facts.k0s_status.unwrap().version, "v1.35.3+k0s.0");
    }

    #[test]
    fn only_gpu_functions_count() {
        let facts = parse(OUTPUT).unwrap();
        assert_eq!(
            facts.gpus,
            [Gpu {
                address: "0000:3b:00.0".into(),
                device_id: "2331".into(),
                name: "GH100 [H100 PCIe]".into()
            }]
        );
        assert!(facts.mig_capable);
        assert!(!facts.mig_enabled);
    }

    #[test]
    fn fresh_host_has_no_k0s() {
        let facts = parse("hostname=lab-1\nmachine=aarch64\n").unwrap();
        assert_eq!(facts.architecture, "arm64");
        assert!(facts.k0s_binary_version.is_none());
        assert!(facts.k0s_status.is_none());
        assert!(facts.gpus.is_empty());
    }

    #[test]
    fn malformed_line_is_an_error() {
        assert!(parse("no equals sign").is_err());
    }

    #[test]
    fn sysfs_lines_name_gpus() {
        let facts = parse("gpu.sysfs=0000:01:00.0 0x20b5\n").unwrap();
        assert_eq!(facts.gpus[0].device_id, "20B5");
    }
}
