//! The ansible.utils ip filters kubespray's and kubeasz's templates use most: `ipwrap`, `ipv4`,
//! `ipv6` and `ipaddr` (with 'address', 'network', 'net', 'prefix', 'netmask', 'host' and an
//! index into a network). A value that is not what the filter asks for gives false, as there; a
//! list gives the items that are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use minijinja::value::ValueKind;
use minijinja::{Error, Value};

use super::invalid;

/// An address with its prefix length (the full length when none was written).
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: IpAddr,
    prefix: u32,
    written_prefix: bool,
}

impl Net {
    fn parse(text: &str) -> Option<Net> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        Some(Net {
            addr,
            prefix,
            written_prefix: p.is_some(),
        })
    }

    fn bits(&self) -> u32 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn as_u128(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// The address `n` in this network's family.
    fn same_family(&self, n: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    fn mask(&self) -> u128 {
        let host_bits = self.bits() - self.prefix;
        let all = if self.bits() == 32 {
            u32::MAX as u128
        } else {
            u128::MAX
        };
        all.checked_shl(host_bits).unwrap_or(0) & all
    }

    fn network(&self) -> IpAddr {
        self.same_family(self.as_u128() & self.mask())
    }
}

/// Applies `f` to a value, or to each item of a list keeping those it accepts.
fn each(value: &Value, f: impl Fn(&str) -> Result<Value, Error>) -> Result<Value, Error> {
    if value.kind() == ValueKind::Seq {
        let mut out = Vec::new();
        for item in value.try_iter()? {
            let v = f(&item.to_string())?;
            if v.kind() != ValueKind::Bool || v.is_true() {
                out.push(v);
            }
        }
        return Ok(Value::from(out));
    }
    f(&value.to_string())
}

/// `ipwrap`: an IPv6 address in brackets (for `host:port`); anything else as it is.
pub(super) fn ipwrap(value: &Value) -> Result<Value, Error> {
    each(value, |s| {
        Ok(Value::from(match Net::parse(s) {
            Some(n) if n.addr.is_ipv6() => match s.split_once('/') {
                Some((a, p)) => format!("[{a}]/{p}"),
                None => format!("[{s}]"),
            },
            _ => s.to_string(),
        }))
    })
}

pub(super) fn ipv4(value: &Value, query: Option<Value>) -> Result<Value, Error> {
    each(value, |s| match Net::parse(s) {
        Some(n) if n.addr.is_ipv4() => query_net(s, n, query.as_ref()),
        _ => Ok(Value::from(false)),
    })
}

pub(super) fn ipv6(value: &Value, query: Option<Value>) -> Result<Value, Error> {
    each(value, |s| match Net::parse(s) {
        Some(n) if n.addr.is_ipv6() => query_net(s, n, query.as_ref()),
        _ => Ok(Value::from(false)),
    })
}

pub(super) fn ipaddr(value: &Value, query: Option<Value>) -> Result<Value, Error> {
    each(value, |s| match Net::parse(s) {
        Some(n) => query_net(s, n, query.as_ref()),
        None => Ok(Value::from(false)),
    })
}

fn query_net(text: &str, n: Net, query: Option<&Value>) -> Result<Value, Error> {
    let Some(q) = query else {
        return Ok(Value::from(text));
    };
    if let Some(i) = q.as_i64() {
        // The i-th address of the network, with its prefix (negative counts from the end).
        let size = 1u128.checked_shl(n.bits() - n.prefix).unwrap_or(0);
        let base = n.as_u128() & n.mask();
        let offset = if i >= 0 {
            i as u128
        } else {
            size.wrapping_sub(i.unsigned_abs() as u128)
        };
        if size != 0 && offset >= size {
            return Ok(Value::from(false));
        }
        return Ok(Value::from(format!(
            "{}/{}",
            n.same_family(base.wrapping_add(offset)),
            n.prefix
        )));
    }
    let q = q.as_str().unwrap_or_default();
    Ok(match q {
        "address" => Value::from(n.addr.to_string()),
        "network" => Value::from(n.network().to_string()),
        "net" if n.written_prefix && n.addr == n.network() => {
            Value::from(format!("{}/{}", n.network(), n.prefix))
        }
        "net" => Value::from(false),
        "prefix" => Value::from(n.prefix),
        "netmask" => Value::from(n.same_family(n.mask()).to_string()),
        "host" if n.written_prefix && n.addr == n.network() && n.prefix < n.bits() => {
            Value::from(false)
        }
        "host" => Value::from(format!("{}/{}", n.addr, n.prefix)),
        "public" | "private" => {
            let private = match n.addr {
                IpAddr::V4(a) => a.is_private() || a.is_loopback() || a.is_link_local(),
                IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xfe00) == 0xfc00,
            };
            if private == (q == "private") {
                Value::from(text)
            } else {
                Value::from(false)
            }
        }
        other => return Err(invalid(format!("ipaddr: query {other:?} is not supported"))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::engine;
    use serde_json::json;

    #[test]
    fn ip_filters_as_ansible_utils_has_them() {
        let (_d, e) = engine();
        let r = |src: &str| e.render_str(src, "test", &json!({}).into()).unwrap();
        assert_eq!(
            r("{{ 'fd00::1' | ipwrap }} {{ '10.0.0.1' | ipwrap }} {{ 'fd00::/64' | ipwrap }} {{ 'host.local' | ipwrap }}"),
            "[fd00::1] 10.0.0.1 [fd00::]/64 host.local"
        );
        assert_eq!(
            r("{{ ['10.0.0.1', 'fd00::1', 'x'] | ipv4 }} {{ ['10.0.0.1', 'fd00::1'] | ipv6 }} {{ 'x' | ipaddr }}"),
            "['10.0.0.1'] ['fd00::1'] False"
        );
        // kubespray's first service address: the network's first host.
        assert_eq!(
            r("{{ '10.233.0.0/18' | ipaddr('net') | ipaddr(1) | ipaddr('address') }}"),
            "10.233.0.1"
        );
        assert_eq!(
            r("{{ '10.233.5.7/18' | ipaddr('network') }} {{ '10.233.5.7/18' | ipaddr('prefix') }} {{ '10.233.5.7/18' | ipaddr('netmask') }} {{ '10.233.0.0/18' | ipaddr(-1) }}"),
            "10.233.0.0 18 255.255.192.0 10.233.63.255/18"
        );
        assert_eq!(
            r("{{ '10.233.5.7/18' | ipaddr('net') }} {{ '192.168.1.1' | ipaddr('private') }} {{ '8.8.8.8' | ipaddr('private') }}"),
            "False 192.168.1.1 False"
        );
    }
}
