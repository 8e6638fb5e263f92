//! Facts about a host, gathered once per host per run when something first asks for them (a
//! template or condition that reads `facts`, a module such as `package`, or `h.facts` in a custom
//! task). One round trip of POSIX sh; tools that may be missing (ip, hostname -f) are optional.

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use crate::error::ModuleError;
use crate::host::Host;

/// Prints `key=value` lines; `addr=IFACE FAMILY ADDRESS/PREFIX` once per address.
const GATHER: &str = r#"
if [ -r /etc/os-release ]; then . /etc/os-release; fi
echo "id=${ID:-}"
echo "id_like=${ID_LIKE:-}"
echo "version_id=${VERSION_ID:-}"
echo "pretty_name=${PRETTY_NAME:-}"
echo "hostname=$(uname -n)"
echo "fqdn=$(hostname -f 2>/dev/null || uname -n)"
echo "kernel=$(uname -r)"
echo "architecture=$(uname -m)"
echo "processor_count=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
echo "memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo service_mgr=systemd; else echo "service_mgr=$(cat /proc/1/comm 2>/dev/null)"; fi
for m in apt-get dnf yum; do command -v "$m" >/dev/null 2>&1 && echo "has=$m"; done
if command -v ip >/dev/null 2>&1; then
  ip -o addr show 2>/dev/null | awk '{print "addr=" $2 " " $3 " " $4}'
  ip -4 route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) { if ($i=="via") g=$(i+1); if ($i=="dev") d=$(i+1) } print "route=" d " " g; exit}'
fi
"#;

/// Parses the output of the gather script into the facts map templates see as `facts`.
pub fn parse(text: &str) -> Value {
    let mut kv: Map<String, Value> = Map::new();
    let mut managers = Vec::new();
    let mut interfaces: Map<String, Value> = Map::new();
    let mut all_ipv4 = Vec::new();
    let mut route: Option<(String, String)> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "has" => managers.push(v.to_string()),
            "addr" => {
                let mut parts = v.split_whitespace();
                if let (Some(iface), Some(family), Some(cidr)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
                    let key = if family == "inet" { "ipv4" } else { "ipv6" };
                    let entry = interfaces
                        .entry(iface.to_string())
                        .or_insert_with(|| json!({ "ipv4": [], "ipv6": [] }));
                    if let Some(list) = entry[key].as_array_mut() {
                        list.push(json!({ "address": address, "prefix": prefix }));
                    }
                    if family == "inet" && iface != "lo" {
                        all_ipv4.push(Value::from(address));
                    }
                }
            }
            "route" => {
                let mut parts = v.split_whitespace();
                route = parts
                    .next()
                    .map(|d| (d.to_string(), parts.next().unwrap_or("").to_string()));
            }
            _ => {
                kv.insert(k.to_string(), Value::from(v));
            }
        }
    }
    let s = |k: &str| kv.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let id = s("id");
    let like = s("id_like");
    let family = os_family(&id, &like);
    let pkg_mgr = package_manager(&family, &managers);
    let version = s("version_id");
    // The default interface: the default route's, else the first non-loopback with an IPv4.
    let default_iface = route.as_ref().map(|(d, _)| d.clone()).or_else(|| {
        interfaces
            .iter()
            .find(|(name, v)| *name != "lo" && v["ipv4"].as_array().is_some_and(|a| !a.is_empty()))
            .map(|(name, _)| name.clone())
    });
    let default_ipv4 = default_iface
        .as_ref()
        .and_then(|i| interfaces.get(i).map(|v| (i, v)))
        .and_then(|(i, v)| {
            v["ipv4"].get(0).map(|a| {
                json!({
                    "interface": i,
                    "address": a["address"],
                    "prefix": a["prefix"],
                    "gateway": route.as_ref().map(|(_, g)| g.clone()).unwrap_or_default(),
                })
            })
        })
        .unwrap_or_else(|| json!({}));
    json!({
        "os_family": family,
        "distribution": id,
        "distribution_like": like,
        "distribution_version": version,
        "distribution_major_version": version.split('.').next().unwrap_or(""),
        "distribution_pretty_name": s("pretty_name"),
        "hostname": s("hostname"),
        "fqdn": s("fqdn"),
        "kernel": s("kernel"),
        "architecture": s("architecture"),
        "processor_count": s("processor_count").parse::<u64>().unwrap_or(0),
        "memtotal_mb": s("memtotal_kb").parse::<u64>().unwrap_or(0) / 1024,
        "service_mgr": s("service_mgr"),
        "pkg_mgr": pkg_mgr,
        "default_ipv4": default_ipv4,
        "interfaces": interfaces,
        "all_ipv4_addresses": all_ipv4,
    })
}

fn os_family(id: &str, like: &str) -> String {
    let words: Vec<&str> = std::iter::once(id).chain(like.split_whitespace()).collect();
    let has = |names: &[&str]| words.iter().any(|w| names.contains(w));
    if has(&["debian", "ubuntu"]) {
        "Debian".into()
    } else if has(&[
        "rhel",
        "fedora",
        "centos",
        "rocky",
        "almalinux",
        "amzn",
        "ol",
    ]) {
        "RedHat".into()
    } else if has(&["suse", "opensuse", "sles"]) {
        "Suse".into()
    } else if has(&["arch"]) {
        "Archlinux".into()
    } else if has(&["alpine"]) {
        "Alpine".into()
    } else {
        let mut c = id.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    }
}

/// The family's own manager when it is there (a Debian host with dnf installed still uses apt),
/// else whichever is present.
fn package_manager(family: &str, present: &[String]) -> String {
    let has = |m: &str| present.iter().any(|p| p == m);
    let pick = match family {
        "Debian" if has("apt-get") => Some("apt"),
        "RedHat" if has("dnf") => Some("dnf"),
        "RedHat" if has("yum") => Some("yum"),
        _ => None,
    };
    pick.or_else(|| {
        [("dnf", "dnf"), ("yum", "yum"), ("apt-get", "apt")]
            .iter()
            .find(|(bin, _)| has(bin))
            .map(|(_, m)| *m)
    })
    .unwrap_or("unknown")
    .to_string()
}

pub async fn gather(host: &Host) -> Result<Value, ModuleError> {
    let out = host.run(GATHER).await?;
    if !out.success() {
        return Err(ModuleError::Failed(format!(
            "gathering facts failed: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(parse(&out.stdout_text()))
}

/// Facts of one host, gathered at most once.
#[async_trait]
pub trait SystemFacts: Send + Sync {
    async fn get(&self) -> Result<Value, ModuleError>;
}

/// Gathers through `host` the first time and remembers the result for the run.
pub struct Cached<'a> {
    pub host: &'a Host,
    pub cell: &'a OnceCell<Value>,
}

#[async_trait]
impl SystemFacts for Cached<'_> {
    async fn get(&self) -> Result<Value, ModuleError> {
        self.cell
            .get_or_try_init(|| gather(self.host))
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;
    use std::sync::Arc;

    const SAMPLE: &str = "id=rocky\nid_like=rhel centos fedora\nversion_id=9.3\n\
        hostname=m1\nfqdn=m1.lab\nprocessor_count=4\nmemtotal_kb=8000000\nservice_mgr=systemd\n\
        has=dnf\nhas=yum\naddr=lo inet 127.0.0.1/8\naddr=eth0 inet 10.77.0.11/24\n\
        addr=eth0 inet6 fe80::1/64\nroute=eth0 10.77.0.1\n";

    #[test]
    fn parses_a_redhat_host() {
        let f = parse(SAMPLE);
        assert_eq!(f["os_family"], "RedHat");
        assert_eq!(f["pkg_mgr"], "dnf");
        assert_eq!(f["distribution_major_version"], "9");
        assert_eq!(f["default_ipv4"]["address"], "10.77.0.11");
        assert_eq!(f["default_ipv4"]["interface"], "eth0");
        assert_eq!(f["default_ipv4"]["gateway"], "10.77.0.1");
        assert_eq!(f["all_ipv4_addresses"], json!(["10.77.0.11"]));
        assert_eq!(f["interfaces"]["eth0"]["ipv6"][0]["address"], "fe80::1");
        assert_eq!(f["memtotal_mb"], 7812);
        assert_eq!(f["processor_count"], 4);
    }

    #[test]
    fn a_debian_host_with_dnf_still_uses_apt() {
        let f = parse("id=debian\nversion_id=12\nhas=apt-get\nhas=dnf\n");
        assert_eq!(f["os_family"], "Debian");
        assert_eq!(f["pkg_mgr"], "apt");
        assert_eq!(f["default_ipv4"], json!({}));
    }

    #[tokio::test]
    async fn gathers_this_machine_once() {
        let host = Host::new("local", Arc::new(LocalTransport));
        let cell = OnceCell::new();
        let cached = Cached {
            host: &host,
            cell: &cell,
        };
        let f = cached.get().await.unwrap();
        assert!(f["processor_count"].as_u64().unwrap() >= 1);
        assert!(!f["hostname"].as_str().unwrap().is_empty());
        assert!(cell.initialized());
    }
}
