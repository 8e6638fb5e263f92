//! Ansible as the oracle: what real ansible-core makes of an inventory is what we make of it.
//! CI installs ansible-core from PyPI (`.ci/run`); elsewhere the tests skip without it, saying so.

use std::path::{Path, PathBuf};

use engine::inventory::Inventory;
use serde_json::{Map, Value};

/// `ansible-inventory`: on PATH, or in the virtualenv CI makes (/opt/ansible-venv).
fn ansible_inventory(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/opt/ansible-venv/bin")])
        .map(|d| d.join("ansible-inventory"))
        .find(|p| p.is_file());
    if found.is_none() {
        // CI installs it: there a missing oracle is a failure, not a skip.
        if std::env::var_os("PLAYBOOK_TEST_REQUIRE_LAB").is_some_and(|v| v == "1") {
            panic!("{test}: ansible-core is not installed (CI installs it in /opt/ansible-venv)");
        }
        crate::support::skip("ansible-core not installed", test, "no ansible-inventory");
    }
    found
}

const CONNECTION: &[&str] = &[
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_become",
    "ansible_connection",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ansible-inventory")
}

/// Every host, every group's members and every variable (null aside: TOML has none) as
/// `ansible-inventory --list` has them, and the connection settings from Ansible's variables.
fn assert_read_as_ansible_reads(bin: &Path, file: &str) {
    let path = fixture().join(file);
    let out = std::process::Command::new(bin)
        .args(["-i", path.to_str().unwrap(), "--list"])
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = Inventory::load(&path).unwrap();

    let hostvars = theirs["_meta"]["hostvars"].as_object().unwrap();
    let mut their_hosts: Vec<&String> = hostvars.keys().collect();
    their_hosts.sort();
    let mut our_hosts: Vec<&String> = ours.hosts().map(|h| &h.name).collect();
    our_hosts.sort();
    assert_eq!(our_hosts, their_hosts, "{file}: the hosts");

    // A group's members, its children's included.
    fn members(inv: &Value, group: &str, out: &mut Vec<String>) {
        for h in inv[group]["hosts"].as_array().into_iter().flatten() {
            out.push(h.as_str().unwrap().to_string());
        }
        for c in inv[group]["children"].as_array().into_iter().flatten() {
            members(inv, c.as_str().unwrap(), out);
        }
    }
    for (group, our_members) in ours.groups() {
        if group == "all" || group == "ungrouped" {
            continue;
        }
        let mut theirs_m = Vec::new();
        members(&theirs, &group, &mut theirs_m);
        theirs_m.sort();
        theirs_m.dedup();
        let mut ours_m = our_members.clone();
        ours_m.sort();
        assert_eq!(ours_m, theirs_m, "{file}: the members of {group}");
    }

    for (host, vars) in hostvars {
        let ours_vars = ours.host_vars(host, &Map::new(), &Map::new());
        for (k, v) in vars.as_object().unwrap() {
            if CONNECTION.contains(&k.as_str()) {
                continue;
            }
            if v.is_null() {
                assert!(
                    !ours_vars.contains_key(k),
                    "{file}: {host}.{k} is null there"
                );
                continue;
            }
            assert_eq!(ours_vars.get(k), Some(v), "{file}: {host}.{k}");
        }
        let entry = ours.host(host).unwrap();
        let s = |k: &str| vars[k].as_str().map(str::to_string);
        assert_eq!(
            Some(entry.address.clone()),
            s("ansible_host").or(Some(host.clone())),
            "{file}: {host} address"
        );
        assert_eq!(entry.user, s("ansible_user"), "{file}: {host} user");
        let port = vars["ansible_port"]
            .as_u64()
            .map(|p| p as u16)
            .unwrap_or(22);
        assert_eq!(entry.port, port, "{file}: {host} port");
    }
}

#[test]
fn an_ini_inventory_reads_as_ansible_reads_it() {
    let Some(bin) = ansible_inventory("an_ini_inventory_reads_as_ansible_reads_it") else {
        return;
    };
    assert_read_as_ansible_reads(&bin, "inventory.ini");
}

#[test]
fn a_yaml_inventory_reads_as_ansible_reads_it() {
    let Some(bin) = ansible_inventory("a_yaml_inventory_reads_as_ansible_reads_it") else {
        return;
    };
    assert_read_as_ansible_reads(&bin, "hosts.yml");
}
