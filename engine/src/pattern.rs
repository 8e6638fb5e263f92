//! Host patterns, written as Ansible users write them: for `--limit` and for a task's targets.
//!
//! A pattern is a list of elements separated by `:` or `,`. An element is
//! - `all` or `*`: every host;
//! - a group name (its hosts, children's included; `ungrouped` works too);
//! - a host name;
//! - a glob with `*`, `?` or `[...]` (a character class such as `h[1-3]`, not Ansible's
//!   `group[0]` subscript), matched against host names and group names alike: `web*` selects the
//!   hosts named `web…` and the members of the groups named `web…`.
//!
//! An element prefixed with `&` intersects, one prefixed with `!` excludes. As in Ansible the
//! order of elements does not matter: the result is the union of the plain elements (every host
//! when there are none), intersected with each `&` element, minus each `!` element. So
//! `masters:workers`, `masters:&etcd`, `all:!h2` and `!h2` all mean what they say.
//!
//! An element that names no host or group, or a glob that matches none, is an error naming it
//! (with the closest name as a suggestion); a pattern that selects no host is not.

use std::collections::HashSet;

use crate::inventory::{closest, Inventory};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty host pattern")]
    Empty,
    #[error("host pattern `{pattern}`: empty element after `{prefix}`")]
    EmptyElement { pattern: String, prefix: char },
    #[error("host pattern `{pattern}`: no host or group named `{name}`{}", hint(.suggestion))]
    Unknown {
        pattern: String,
        name: String,
        suggestion: Option<String>,
    },
    #[error("host pattern `{pattern}`: `{glob}` matches no host or group")]
    NoMatch { pattern: String, glob: String },
    #[error("host pattern `{pattern}`: bad glob `{glob}`: {message}")]
    BadGlob {
        pattern: String,
        glob: String,
        message: String,
    },
}

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// The hosts `pattern` selects, in inventory file order.
pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, PatternError> {
    let mut unions = Vec::new();
    let mut intersections = Vec::new();
    let mut exclusions = Vec::new();
    for element in pattern.split([':', ',']).map(str::trim) {
        if element.is_empty() {
            continue;
        }
        let (list, rest, prefix) = if let Some(rest) = element.strip_prefix('&') {
            (&mut intersections, rest, '&')
        } else if let Some(rest) = element.strip_prefix('!') {
            (&mut exclusions, rest, '!')
        } else {
            (&mut unions, element, ' ')
        };
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(PatternError::EmptyElement {
                pattern: pattern.to_string(),
                prefix,
            });
        }
        list.push(resolve(inv, pattern, rest)?);
    }
    if unions.is_empty() && intersections.is_empty() && exclusions.is_empty() {
        return Err(PatternError::Empty);
    }
    let mut selected: HashSet<&str> = if unions.is_empty() {
        inv.hosts().map(|h| h.name.as_str()).collect()
    } else {
        unions.into_iter().flatten().collect()
    };
    for set in intersections {
        selected.retain(|h| set.contains(h));
    }
    for set in exclusions {
        selected.retain(|h| !set.contains(h));
    }
    Ok(inv
        .hosts()
        .filter(|h| selected.contains(h.name.as_str()))
        .map(|h| h.name.clone())
        .collect())
}

/// The hosts one element (without its prefix) stands for.
fn resolve<'a>(
    inv: &'a Inventory,
    pattern: &str,
    element: &str,
) -> Result<HashSet<&'a str>, PatternError> {
    if element == "*" {
        return Ok(inv.hosts().map(|h| h.name.as_str()).collect());
    }
    if let Some(members) = inv.group_members(element) {
        return Ok(members.iter().map(String::as_str).collect());
    }
    if let Some(host) = inv.host(element) {
        return Ok(HashSet::from([host.name.as_str()]));
    }
    if element.contains(['*', '?', '[']) {
        let glob = glob::Pattern::new(element).map_err(|e| PatternError::BadGlob {
            pattern: pattern.to_string(),
            glob: element.to_string(),
            message: e.msg.to_string(),
        })?;
        let mut found = false;
        let mut set = HashSet::new();
        for host in inv.hosts() {
            if glob.matches(&host.name) {
                found = true;
                set.insert(host.name.as_str());
            }
        }
        for group in inv.group_list() {
            if glob.matches(group) {
                found = true;
                if let Some(members) = inv.group_members(group) {
                    set.extend(members.iter().map(String::as_str));
                }
            }
        }
        if !found {
            return Err(PatternError::NoMatch {
                pattern: pattern.to_string(),
                glob: element.to_string(),
            });
        }
        return Ok(set);
    }
    let names = inv.hosts().map(|h| h.name.as_str()).chain(inv.group_list());
    Err(PatternError::Unknown {
        pattern: pattern.to_string(),
        name: element.to_string(),
        suggestion: closest(element, names).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
[hosts.h3]
[hosts.h1]
[hosts.h2]
[hosts.web1]
[hosts.web2]
[hosts.lone]

[groups.masters]
hosts = ["h1", "h2"]
children = ["etcd"]

[groups.etcd]
hosts = ["h3"]

[groups.workers]
hosts = ["web1", "web2", "h2"]

[groups.webfront]
hosts = ["lone"]

[groups.empty]
"#;

    fn inv() -> Inventory {
        Inventory::parse(INV, "test.toml").unwrap()
    }

    fn sel(p: &str) -> Vec<String> {
        select(&inv(), p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn all_and_star_select_every_host_in_file_order() {
        let every = ["h3", "h1", "h2", "web1", "web2", "lone"];
        assert_eq!(sel("all"), every);
        assert_eq!(sel("*"), every);
    }

    #[test]
    fn group_name_selects_members_with_children() {
        assert_eq!(sel("masters"), ["h3", "h1", "h2"]);
        assert_eq!(sel("etcd"), ["h3"]);
        assert_eq!(sel("ungrouped"), Vec::<String>::new());
    }

    #[test]
    fn host_name_selects_the_host() {
        assert_eq!(sel("h2"), ["h2"]);
        assert_eq!(sel(" lone "), ["lone"]);
    }

    #[test]
    fn globs_match_hosts_and_groups() {
        // web1, web2 by host name, lone through group webfront.
        assert_eq!(sel("web*"), ["web1", "web2", "lone"]);
        assert_eq!(sel("h?"), ["h3", "h1", "h2"]);
        assert_eq!(sel("h[1-2]"), ["h1", "h2"]);
        assert_eq!(sel("work*"), ["h2", "web1", "web2"]);
    }

    #[test]
    fn union_with_colon_or_comma() {
        assert_eq!(sel("etcd:workers"), ["h3", "h2", "web1", "web2"]);
        assert_eq!(sel("etcd,workers"), ["h3", "h2", "web1", "web2"]);
        assert_eq!(sel("lone,h1"), ["h1", "lone"]);
        // A trailing separator is ignored, as in `--limit h1,`.
        assert_eq!(sel("h1,"), ["h1"]);
    }

    #[test]
    fn intersection() {
        assert_eq!(sel("masters:&workers"), ["h2"]);
        assert_eq!(sel("masters:&etcd"), ["h3"]);
        // Only an intersection: of every host.
        assert_eq!(sel("&workers"), ["h2", "web1", "web2"]);
    }

    #[test]
    fn exclusion() {
        assert_eq!(sel("all:!h2"), ["h3", "h1", "web1", "web2", "lone"]);
        assert_eq!(sel("!masters"), ["web1", "web2", "lone"]);
        assert_eq!(sel("masters:!etcd"), ["h1", "h2"]);
    }

    #[test]
    fn order_of_elements_does_not_matter() {
        assert_eq!(sel("!h2:masters"), ["h3", "h1"]);
        assert_eq!(sel("&workers:masters"), ["h2"]);
        assert_eq!(sel("masters:workers:&workers:!web1"), ["h2", "web2"]);
    }

    #[test]
    fn selecting_nothing_is_not_an_error() {
        assert!(sel("empty").is_empty());
        assert!(sel("masters:&webfront").is_empty());
        assert!(sel("all:!all").is_empty());
    }

    #[test]
    fn unknown_name_is_an_error_with_suggestion() {
        let e = select(&inv(), "masters:mastres").unwrap_err();
        assert_eq!(
            e.to_string(),
            "host pattern `masters:mastres`: no host or group named `mastres`; did you mean `masters`?"
        );
        let e = select(&inv(), "all:!h9").unwrap_err();
        assert_eq!(
            e,
            PatternError::Unknown {
                pattern: "all:!h9".into(),
                name: "h9".into(),
                suggestion: Some("h3".into()),
            }
        );
        let e = select(&inv(), "&databases").unwrap_err();
        assert_eq!(
            e.to_string(),
            "host pattern `&databases`: no host or group named `databases`"
        );
    }

    #[test]
    fn glob_matching_nothing_is_an_error() {
        let e = select(&inv(), "db*").unwrap_err();
        assert_eq!(
            e.to_string(),
            "host pattern `db*`: `db*` matches no host or group"
        );
        // A glob matching an empty group is fine.
        assert!(sel("emp*").is_empty());
    }

    #[test]
    fn bad_and_empty_patterns() {
        assert_eq!(select(&inv(), "").unwrap_err(), PatternError::Empty);
        assert_eq!(select(&inv(), " , : ").unwrap_err(), PatternError::Empty);
        assert_eq!(
            select(&inv(), "all:!").unwrap_err(),
            PatternError::EmptyElement {
                pattern: "all:!".into(),
                prefix: '!'
            }
        );
        assert!(matches!(
            select(&inv(), "h[").unwrap_err(),
            PatternError::BadGlob { .. }
        ));
    }
}
