//! The inventory: hosts, groups, connection settings and variables, read from a TOML file.
//!
//! ```toml
//! [defaults]                  # connection settings for every host unless a host overrides them
//! connection = "ssh"          # "ssh" | "local"
//! user = "root"
//! port = 22
//! identity_file = "keys/id_lab"      # relative paths: against the inventory file's directory
//! known_hosts = "/srv/lab/known_hosts"
//! become = false              # sudo
//! become_user = "root"
//! become_password = "..."     # optional; kept as a Secret, never shown
//! secret = ["db_password"]    # variables whose values are secrets (also at host and group level)
//!
//! [vars]                      # global variables
//! cluster = "demo"
//!
//! [hosts.h1]
//! address = "10.77.0.11"      # defaults to the host name
//! port = 2222                 # any [defaults] key may be overridden per host
//! vars = { root = "/tmp/h1" }
//!
//! [groups.masters]
//! hosts = ["h1"]
//! children = ["etcd"]         # child groups: their hosts are members too
//! vars = { vip = "10.77.0.100" }
//! ```
//!
//! Any string value may be a vault value (`vault:age:…`, see `crate::vault`) and the whole file
//! may be encrypted; both are decrypted when the file is read, and their variables are secret.
//!
//! Unknown keys are errors naming the key and the accepted ones. Every error carries the file,
//! line and column (its `Display` reads `FILE:LINE:COL: message`) and, for miette, the source
//! span. Two groups exist without being written: `all` (every host) and `ungrouped` (hosts in no
//! written group). Precedence of variables is documented on [`Inventory::host_vars`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_spanned::Spanned;

use crate::connection::Become;
pub use crate::connection::Connection;
use crate::secret::Secret;
use crate::vault::Vault;

/// One host with the `[defaults]` merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEntry {
    pub name: String,
    /// Where to connect; the host name unless `address` is given.
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub connection: Connection,
    /// Resolved against the inventory file's directory when relative (paths starting with `~`
    /// are left to ssh).
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub become_: bool,
    pub become_user: String,
    pub become_password: Option<Secret>,
}

impl HostEntry {
    /// The sudo settings tasks on this host run with, if `become` is on.
    pub fn become_config(&self) -> Option<Become> {
        self.become_.then(|| Become {
            user: self.become_user.clone(),
            password: self.become_password.clone(),
        })
    }
}

/// Connection settings given on the command line (`-u`, `--private-key`, `-b`, `--become-user`).
/// As in Ansible, the inventory's own settings win: these fill in what it leaves unset.
#[derive(Debug, Clone, Default)]
pub struct CommandLineSettings {
    pub user: Option<String>,
    /// As given: relative to the working directory, not to the inventory.
    pub identity_file: Option<PathBuf>,
    pub become_: bool,
    pub become_user: Option<String>,
}

/// Where a resolved variable came from (see [`Inventory::host_vars`] for the precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarSource {
    /// Set by the engine: `inventory_hostname`, `ansible_host`, `group_names`.
    Magic,
    /// `-e` on the command line.
    Extra,
    /// The host's own `vars`.
    Host(String),
    /// The `vars` of this group.
    Group(String),
    /// The inventory's `[vars]`.
    Global,
    /// The playbook's defaults.
    Playbook,
}

impl fmt::Display for VarSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarSource::Magic => f.write_str("magic"),
            VarSource::Extra => f.write_str("extra vars (-e)"),
            VarSource::Host(h) => write!(f, "host {h}"),
            VarSource::Group(g) => write!(f, "group {g}"),
            VarSource::Global => f.write_str("[vars]"),
            VarSource::Playbook => f.write_str("playbook defaults"),
        }
    }
}

/// What kind of mistake an [`InventoryError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InventoryErrorKind {
    /// The file could not be read.
    Io,
    /// TOML syntax, a value of the wrong type, or an unknown key.
    Toml,
    /// A group lists a host that is not in `[hosts]`.
    UnknownHost,
    /// A group lists a child group that does not exist.
    UnknownGroup,
    /// Group children form a cycle.
    GroupCycle,
    /// `connection` is neither "ssh" nor "local".
    BadConnection,
    /// A host or group name that patterns could not address, or a reserved group name.
    BadName,
    /// `become_password` is not a string.
    BadSecret,
    /// A vault value or file that cannot be decrypted (no key, a wrong key, damaged).
    Vault,
    /// A `-e` argument that is neither `KEY=VALUE` nor `@FILE`, or whose KEY is no variable name.
    ExtraVar,
    /// A host's `address` that is empty or holds whitespace.
    BadAddress,
    /// An Ansible INI or YAML inventory (or a file of its group_vars/host_vars) that cannot be read.
    Ansible,
}

/// An inventory (or `-e @file`) error. `Display` reads `FILE:LINE:COL: message`; as a miette
/// `Diagnostic` it also carries the source text (with `become_password` values masked) and the
/// span.
#[derive(Debug)]
pub struct InventoryError(Box<Details>);

#[derive(Debug, Diagnostic)]
#[diagnostic(code(playbook::inventory))]
struct Details {
    kind: InventoryErrorKind,
    file: String,
    /// 1-based line and column (in characters).
    position: Option<(usize, usize)>,
    message: String,
    #[help]
    help: Option<String>,
    #[source_code]
    source_code: NamedSource<String>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    io: Option<std::io::Error>,
}

impl fmt::Display for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.position) {
            (true, _) => f.write_str(&self.message),
            (false, None) => write!(f, "{}: {}", self.file, self.message),
            (false, Some((line, col))) => {
                write!(f, "{}:{line}:{col}: {}", self.file, self.message)
            }
        }
    }
}

impl std::error::Error for Details {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InventoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

impl Diagnostic for InventoryError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.code()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.0.labels()
    }
}

impl From<Details> for InventoryError {
    fn from(d: Details) -> Self {
        InventoryError(Box::new(d))
    }
}

impl InventoryError {
    pub fn kind(&self) -> InventoryErrorKind {
        self.0.kind
    }
    pub fn file(&self) -> &str {
        &self.0.file
    }
    /// 1-based line.
    pub fn line(&self) -> Option<usize> {
        self.0.position.map(|p| p.0)
    }
    /// 1-based column, counted in characters.
    pub fn column(&self) -> Option<usize> {
        self.0.position.map(|p| p.1)
    }
    /// The message without the position.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    fn io(path: &Path, err: std::io::Error) -> Self {
        Details {
            kind: InventoryErrorKind::Io,
            file: path.display().to_string(),
            position: None,
            message: err.to_string(),
            help: None,
            source_code: NamedSource::new(path.display().to_string(), String::new()),
            labels: Vec::new(),
            io: Some(err),
        }
        .into()
    }

    fn plain(kind: InventoryErrorKind, message: String) -> Self {
        Details {
            kind,
            file: String::new(),
            position: None,
            message,
            help: None,
            source_code: NamedSource::new("", String::new()),
            labels: Vec::new(),
            io: None,
        }
        .into()
    }

    fn toml(err: toml::de::Error, src: &Source) -> Self {
        let mut message = err.message().trim_end().to_string();
        if let Some(key) = err.span().and_then(|s| src.text.get(s)) {
            // toml says only "duplicate key"; name it.
            if message == "duplicate key" && !key.is_empty() && !key.contains('\n') {
                message = format!("duplicate key `{key}`");
            }
        }
        match err.span() {
            Some(span) => src.error(InventoryErrorKind::Toml, span, message, "here"),
            None => Details {
                kind: InventoryErrorKind::Toml,
                file: src.file.clone(),
                position: None,
                message,
                help: None,
                source_code: src.named(),
                labels: Vec::new(),
                io: None,
            }
            .into(),
        }
    }

    fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }
}

/// The text of a file being read, for positions and for the miette source.
struct Source<'a> {
    file: String,
    text: &'a str,
}

impl Source<'_> {
    /// The source as shown in diagnostics: the values of `become_password` and of the variables
    /// the file marks secret are masked (same byte length, so spans stay valid).
    fn named(&self) -> NamedSource<String> {
        NamedSource::new(&self.file, mask_secrets(self.text)).with_language("toml")
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    fn error(
        &self,
        kind: InventoryErrorKind,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> InventoryError {
        let len = span.end.saturating_sub(span.start);
        Details {
            kind,
            file: self.file.clone(),
            position: Some(self.position(span.start)),
            message: message.into(),
            help: None,
            source_code: self.named(),
            labels: vec![LabeledSpan::new_with_span(
                Some(label.into()),
                SourceSpan::new(span.start.into(), len),
            )],
            io: None,
        }
        .into()
    }
}

/// Replaces the characters of secret values with `*`, byte for byte: `become_password`, the
/// variables named in any `secret = [...]` list of the file (found in its text: the file may not
/// parse) and vault values. A string whose closing quote is missing is masked to the end of its
/// line (or of the file, for a multi-line string).
fn mask_secrets(text: &str) -> String {
    static LISTS: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#"(?m)^\s*secret\s*=\s*\[([^\]]*)"#).expect("valid regex")
    });
    let lists = &*LISTS;
    let mut names = vec!["become_password".to_string()];
    for caps in lists.captures_iter(text) {
        for n in caps[1].split(',') {
            let n = n.trim().trim_matches(['"', '\'']);
            if !n.is_empty() {
                names.push(regex::escape(n));
            }
        }
    }
    let value = r#"("""[\s\S]*?(?:"""|\z)|'''[\s\S]*?(?:'''|\z)|"(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?)"#;
    let Ok(re) = regex::Regex::new(&format!(
        r#"\b(?:{})["']?\s*=\s*{value}|"({}[^"\n]*)"#,
        names.join("|"),
        regex::escape(crate::vault::VALUE_PREFIX)
    )) else {
        return text.to_string();
    };
    let mut bytes = text.as_bytes().to_vec();
    for caps in re.captures_iter(text) {
        let inner = match (caps.get(1), caps.get(2)) {
            (Some(m), _) => {
                let v = m.as_str();
                let quote = if v.starts_with("\"\"\"") || v.starts_with("'''") {
                    3
                } else {
                    1
                };
                let closed = v.len() >= 2 * quote && v.ends_with(&v[..quote]);
                let end = if closed { m.end() - quote } else { m.end() };
                (m.start() + quote)..end.max(m.start() + quote)
            }
            (None, Some(m)) => m.range(),
            (None, None) => continue,
        };
        for b in &mut bytes[inner] {
            if *b != b'\n' {
                *b = b'*';
            }
        }
    }
    // Only whole characters between ASCII quotes were replaced by ASCII: still UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// The closest of `candidates` to `name`, if any is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawSettings,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, RawHost>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, RawGroup>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    connection: Option<Spanned<String>>,
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    #[serde(rename = "become")]
    become_: Option<bool>,
    become_user: Option<String>,
    become_password: Option<Spanned<toml::Value>>,
    #[serde(default)]
    secret: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Option<Spanned<String>>,
    connection: Option<Spanned<String>>,
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    #[serde(rename = "become")]
    become_: Option<bool>,
    become_user: Option<String>,
    become_password: Option<Spanned<toml::Value>>,
    #[serde(default)]
    secret: Vec<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    children: Vec<Spanned<String>>,
    #[serde(default)]
    secret: Vec<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Group {
    name: String,
    children: Vec<String>,
    vars: Map<String, Value>,
}

/// A loaded inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    file: String,
    hosts: Vec<HostEntry>,
    host_vars: HashMap<String, Map<String, Value>>,
    global_vars: Map<String, Value>,
    /// Written groups in file order.
    groups: Vec<Group>,
    /// Every group (with `all` and `ungrouped`) → member hosts in file order, children included.
    members: BTreeMap<String, Vec<String>>,
    /// Variables whose values are secrets, wherever they are set: named in a `secret` list, or
    /// read from the vault.
    secret_names: BTreeSet<String>,
}

/// Group names that exist without being written.
pub const IMPLICIT_GROUPS: &[&str] = &["all", "ungrouped"];

/// Characters that host patterns give a meaning to, so names may not contain them.
const PATTERN_CHARS: &[char] = &[':', ',', '&', '!', '*', '?', '[', ']'];

impl Inventory {
    /// Reads and parses the inventory at `path`: TOML, or Ansible's INI or YAML (with the
    /// `group_vars/` and `host_vars/` beside it), which is turned into TOML first.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        Inventory::load_with(path, &CommandLineSettings::default())
    }

    /// Like [`load`](Self::load), with connection settings from the command line filling in what
    /// the inventory leaves unset.
    pub fn load_with(path: &Path, cli: &CommandLineSettings) -> Result<Inventory, InventoryError> {
        Inventory::load_with_vault(path, cli, &Vault::default())
    }

    /// Like [`load_with`](Self::load_with), decrypting the file or its vault values with `vault`.
    pub fn load_with_vault(
        path: &Path,
        cli: &CommandLineSettings,
        vault: &Vault,
    ) -> Result<Inventory, InventoryError> {
        let text = Inventory::load_toml_with(path, vault)?;
        Inventory::parse_with(&text, &path.display().to_string(), cli, vault)
    }

    /// The inventory at `path` as TOML text: as it is, or converted from Ansible's INI or YAML.
    pub fn load_toml(path: &Path) -> Result<String, InventoryError> {
        Inventory::load_toml_with(path, &Vault::default())
    }

    /// Like [`load_toml`](Self::load_toml), decrypting an encrypted file first.
    pub fn load_toml_with(path: &Path, vault: &Vault) -> Result<String, InventoryError> {
        use crate::ansible_inventory as ansible;
        let text = read_maybe_encrypted(path, vault)?;
        match ansible::format_of(path, &text) {
            ansible::Format::Toml => Ok(text),
            format => ansible::to_toml(path, &text, format).map_err(|e| {
                Details {
                    kind: InventoryErrorKind::Ansible,
                    file: e.file,
                    position: (e.line > 0).then_some((e.line, 1)),
                    message: e.message,
                    help: None,
                    source_code: NamedSource::new("", String::new()),
                    labels: Vec::new(),
                    io: None,
                }
                .into()
            }),
        }
    }

    /// Parses inventory text; `file_name` is used in errors and as the base for relative paths.
    pub fn parse(source: &str, file_name: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse_with(
            source,
            file_name,
            &CommandLineSettings::default(),
            &Vault::default(),
        )
    }

    fn parse_with(
        source: &str,
        file_name: &str,
        cli: &CommandLineSettings,
        vault: &Vault,
    ) -> Result<Inventory, InventoryError> {
        let src = Source {
            file: file_name.to_string(),
            text: source,
        };
        let raw: RawFile = toml::from_str(source).map_err(|e| InventoryError::toml(e, &src))?;
        let base_dir = Path::new(file_name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let resolve = |p: &str| -> PathBuf {
            let path = PathBuf::from(p);
            if path.is_absolute() || p.starts_with('~') {
                path
            } else {
                base_dir.join(path)
            }
        };

        // Hosts, in file order.
        let defaults = &raw.defaults;
        let default_connection = match &defaults.connection {
            Some(c) => parse_connection(c, &src)?,
            None => Connection::Ssh,
        };
        let default_password = match &defaults.become_password {
            Some(p) => Some(parse_secret(p, &src, vault)?),
            None => None,
        };
        let mut secret_names: BTreeSet<String> = defaults
            .secret
            .iter()
            .map(|n| n.get_ref().clone())
            .collect();
        let mut raw_hosts: Vec<(Spanned<String>, RawHost)> = raw.hosts.into_iter().collect();
        raw_hosts.sort_by_key(|(name, _)| name.span().start);
        let mut hosts = Vec::with_capacity(raw_hosts.len());
        let mut host_vars = HashMap::new();
        for (name, h) in raw_hosts {
            check_name(&name, "host", &src)?;
            let connection = match &h.connection {
                Some(c) => parse_connection(c, &src)?,
                None => default_connection,
            };
            let become_password = match &h.become_password {
                Some(p) => Some(parse_secret(p, &src, vault)?),
                None => default_password.clone(),
            };
            secret_names.extend(h.secret.iter().map(|n| n.get_ref().clone()));
            let name_s = name.get_ref().clone();
            if let Some(a) = &h.address {
                let text = a.get_ref();
                if text.trim().is_empty() || text.chars().any(char::is_whitespace) {
                    return Err(src.error(
                        InventoryErrorKind::BadAddress,
                        a.span(),
                        format!("host `{name_s}`: address {text:?} is no host name or IP address"),
                        "bad address",
                    ));
                }
            }
            hosts.push(HostEntry {
                address: h
                    .address
                    .map(Spanned::into_inner)
                    .unwrap_or_else(|| name_s.clone()),
                port: h.port.or(defaults.port).unwrap_or(22),
                user: h
                    .user
                    .or_else(|| defaults.user.clone())
                    .or_else(|| cli.user.clone()),
                connection,
                identity_file: h
                    .identity_file
                    .as_deref()
                    .or(defaults.identity_file.as_deref())
                    .map(resolve)
                    .or_else(|| cli.identity_file.clone()),
                known_hosts: h
                    .known_hosts
                    .as_deref()
                    .or(defaults.known_hosts.as_deref())
                    .map(resolve),
                become_: h.become_.or(defaults.become_).unwrap_or(cli.become_),
                become_user: h
                    .become_user
                    .or_else(|| defaults.become_user.clone())
                    .or_else(|| cli.become_user.clone())
                    .unwrap_or_else(|| "root".to_string()),
                become_password,
                name: name_s.clone(),
            });
            let vars = decrypt_vars(
                table_to_json(h.vars),
                &format!("host `{name_s}`: "),
                &src,
                vault,
                &mut secret_names,
            )?;
            host_vars.insert(name_s, vars);
        }

        // Groups: names, then references, then cycles.
        let mut raw_groups: Vec<(Spanned<String>, RawGroup)> = raw.groups.into_iter().collect();
        raw_groups.sort_by_key(|(name, _)| name.span().start);
        for (name, _) in &raw_groups {
            check_name(name, "group", &src)?;
            if IMPLICIT_GROUPS.contains(&name.get_ref().as_str()) {
                return Err(src
                    .error(
                        InventoryErrorKind::BadName,
                        name.span(),
                        format!(
                            "`{}` is a built-in group and cannot be defined",
                            name.get_ref()
                        ),
                        "reserved name",
                    )
                    .with_help("global variables go in [vars]"));
            }
            if host_vars.contains_key(name.get_ref()) {
                return Err(src.error(
                    InventoryErrorKind::BadName,
                    name.span(),
                    format!(
                        "`{}` is both a host and a group; host patterns could not tell them apart",
                        name.get_ref()
                    ),
                    "also a host",
                ));
            }
        }
        let host_names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        let group_names: Vec<&str> = raw_groups
            .iter()
            .map(|(n, _)| n.get_ref().as_str())
            .collect();
        for (gname, g) in &raw_groups {
            for h in &g.hosts {
                if !host_names.contains(&h.get_ref().as_str()) {
                    let suggestion = closest(h.get_ref(), host_names.iter().copied());
                    return Err(src.error(
                        InventoryErrorKind::UnknownHost,
                        h.span(),
                        format!(
                            "group `{}` lists unknown host `{}`{}",
                            gname.get_ref(),
                            h.get_ref(),
                            did_you_mean(suggestion)
                        ),
                        "not in [hosts]",
                    ));
                }
            }
            for c in &g.children {
                if !group_names.contains(&c.get_ref().as_str()) {
                    let suggestion = closest(c.get_ref(), group_names.iter().copied());
                    return Err(src.error(
                        InventoryErrorKind::UnknownGroup,
                        c.span(),
                        format!(
                            "group `{}` lists unknown child group `{}`{}",
                            gname.get_ref(),
                            c.get_ref(),
                            did_you_mean(suggestion)
                        ),
                        "no such group",
                    ));
                }
            }
        }
        find_cycle(&raw_groups, &src)?;

        // Members: direct hosts plus every descendant's, in host file order.
        let direct: HashMap<&str, Vec<&str>> = raw_groups
            .iter()
            .map(|(n, g)| {
                let hs = g.hosts.iter().map(|h| h.get_ref().as_str()).collect();
                (n.get_ref().as_str(), hs)
            })
            .collect();
        let children: HashMap<&str, Vec<&str>> = raw_groups
            .iter()
            .map(|(n, g)| {
                let cs = g.children.iter().map(|c| c.get_ref().as_str()).collect();
                (n.get_ref().as_str(), cs)
            })
            .collect();
        let mut members = BTreeMap::new();
        let mut grouped = BTreeSet::new();
        for &g in &group_names {
            let mut set = BTreeSet::new();
            let mut stack = vec![g];
            let mut seen = BTreeSet::new();
            while let Some(x) = stack.pop() {
                if !seen.insert(x) {
                    continue;
                }
                set.extend(direct[x].iter().copied());
                stack.extend(children[x].iter().copied());
            }
            grouped.extend(set.iter().copied());
            let ordered: Vec<String> = host_names
                .iter()
                .filter(|h| set.contains(*h))
                .map(|h| h.to_string())
                .collect();
            members.insert(g.to_string(), ordered);
        }
        let all: Vec<String> = host_names.iter().map(|h| h.to_string()).collect();
        let ungrouped: Vec<String> = host_names
            .iter()
            .filter(|h| !grouped.contains(*h))
            .map(|h| h.to_string())
            .collect();
        members.insert("all".to_string(), all);
        members.insert("ungrouped".to_string(), ungrouped);

        let mut groups = Vec::with_capacity(raw_groups.len());
        for (n, g) in raw_groups {
            secret_names.extend(g.secret.iter().map(|n| n.get_ref().clone()));
            let vars = decrypt_vars(
                table_to_json(g.vars),
                &format!("group `{}`: ", n.get_ref()),
                &src,
                vault,
                &mut secret_names,
            )?;
            groups.push(Group {
                name: n.into_inner(),
                children: g.children.into_iter().map(Spanned::into_inner).collect(),
                vars,
            });
        }
        let global_vars = decrypt_vars(
            table_to_json(raw.vars),
            "[vars]: ",
            &src,
            vault,
            &mut secret_names,
        )?;

        Ok(Inventory {
            file: file_name.to_string(),
            hosts,
            host_vars,
            global_vars,
            groups,
            members,
            secret_names,
        })
    }

    /// The file name the inventory was read from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Variables whose values are secrets: named in a `secret` list or read from the vault.
    pub fn secret_names(&self) -> &BTreeSet<String> {
        &self.secret_names
    }

    /// Registers with `secrets` every value the variables `names` have on any host (with these
    /// playbook defaults and extra vars), and the sudo passwords.
    pub fn register_secrets(
        &self,
        secrets: &crate::secret::Redactor,
        names: &BTreeSet<String>,
        playbook_defaults: &Map<String, Value>,
        extra: &Map<String, Value>,
    ) {
        for h in &self.hosts {
            if let Some(pw) = &h.become_password {
                secrets.add(pw.expose());
            }
            for (k, v) in self.host_vars(&h.name, playbook_defaults, extra) {
                if names.contains(&k) {
                    secrets.add_json(&v);
                }
            }
        }
        // Values that every host overrides are still written somewhere.
        for n in names {
            let layers = [playbook_defaults, &self.global_vars, extra];
            let groups = self.groups.iter().map(|g| &g.vars);
            for layer in layers
                .into_iter()
                .chain(groups)
                .chain(self.host_vars.values())
            {
                if let Some(v) = layer.get(n) {
                    secrets.add_json(v);
                }
            }
        }
    }

    /// Every host, in file order.
    pub fn hosts(&self) -> impl Iterator<Item = &HostEntry> {
        self.hosts.iter()
    }

    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Every group name (written ones, `all` and `ungrouped`) → its member hosts (children's
    /// included), sorted by name.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        self.members
            .iter()
            .map(|(g, hs)| {
                let mut hs = hs.clone();
                hs.sort();
                (g.clone(), hs)
            })
            .collect()
    }

    /// The member hosts of one group (children's included) in inventory file order, or `None`
    /// when there is no such group.
    pub fn group_members(&self, group: &str) -> Option<&[String]> {
        self.members.get(group).map(Vec::as_slice)
    }

    /// Every group name, `all` and `ungrouped` included, sorted.
    pub fn group_list(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// The groups `host` belongs to (directly or through a child group), sorted, without `all`
    /// (`ungrouped` for a host in no written group). This is the `group_names` variable.
    pub fn group_names_of(&self, host: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|(g, hs)| g.as_str() != "all" && hs.iter().any(|h| h == host))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The inventory's `[vars]`.
    pub fn global_vars(&self) -> &Map<String, Value> {
        &self.global_vars
    }

    /// The written groups `host` belongs to, in the order their vars are applied (see
    /// [`Inventory::host_vars`]): repeatedly take the alphabetically first group whose parent
    /// groups (among these) have all been taken.
    fn groups_in_var_order(&self, host: &str) -> Vec<&Group> {
        let mine: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| self.members[&g.name].iter().any(|h| h == host))
            .collect();
        let mut parents_left: BTreeMap<&str, usize> =
            mine.iter().map(|g| (g.name.as_str(), 0)).collect();
        for g in &mine {
            for c in &g.children {
                if let Some(n) = parents_left.get_mut(c.as_str()) {
                    *n += 1;
                }
            }
        }
        let by_name: HashMap<&str, &Group> = mine.iter().map(|g| (g.name.as_str(), *g)).collect();
        let mut ready: BTreeSet<&str> = parents_left
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(g, _)| *g)
            .collect();
        let mut order = Vec::with_capacity(mine.len());
        while let Some(g) = ready.pop_first() {
            let group = by_name[g];
            order.push(group);
            for c in &group.children {
                if let Some(n) = parents_left.get_mut(c.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(c.as_str());
                    }
                }
            }
        }
        order
    }

    /// The variables of `host`, with where each came from, sorted by name.
    ///
    /// Same rule as [`Inventory::host_vars`].
    pub fn host_vars_with_sources(
        &self,
        host: &str,
        playbook_defaults: &Map<String, Value>,
        extra: &Map<String, Value>,
    ) -> Vec<(String, Value, VarSource)> {
        let mut out: BTreeMap<String, (Value, VarSource)> = BTreeMap::new();
        let mut layer = |vars: &Map<String, Value>, source: VarSource| {
            for (k, v) in vars {
                out.insert(k.clone(), (v.clone(), source.clone()));
            }
        };
        // Lowest first; each layer replaces what the ones before it set.
        layer(playbook_defaults, VarSource::Playbook);
        layer(&self.global_vars, VarSource::Global);
        for g in self.groups_in_var_order(host) {
            layer(&g.vars, VarSource::Group(g.name.clone()));
        }
        if let Some(vars) = self.host_vars.get(host) {
            layer(vars, VarSource::Host(host.to_string()));
        }
        layer(extra, VarSource::Extra);
        let mut magic = Map::new();
        magic.insert("inventory_hostname".into(), Value::String(host.to_string()));
        if let Some(entry) = self.host(host) {
            // The address the engine connects to, as Ansible users know it.
            magic.insert("ansible_host".into(), Value::String(entry.address.clone()));
        }
        magic.insert(
            "group_names".into(),
            Value::Array(
                self.group_names_of(host)
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            ),
        );
        layer(&magic, VarSource::Magic);
        out.into_iter().map(|(k, (v, s))| (k, v, s)).collect()
    }

    /// The variables of `host`.
    ///
    /// Each variable name takes its whole value from the place of highest precedence that sets
    /// it (tables are replaced, never merged). From highest to lowest:
    ///
    /// 1. magic variables, set by the engine and not overridable: `inventory_hostname` (the
    ///    host's name), `ansible_host` (its address) and `group_names` (see
    ///    [`Inventory::group_names_of`]);
    /// 2. extra vars (`-e`);
    /// 3. the host's own `vars`;
    /// 4. the `vars` of the groups the host belongs to, directly or through a child group. The
    ///    groups are applied one after another and a later one overrides an earlier one. The
    ///    order: repeatedly take, among the host's groups not yet taken whose parent groups have
    ///    all been taken, the one whose name sorts first (byte order). So a child group always
    ///    overrides its parents, and between unrelated groups the name that sorts later wins —
    ///    except where that would put a group before its own parent (a child `a` of `z` still
    ///    comes after `z`, so `a` also overrides a `b` that `z` overrides);
    /// 5. the inventory's global `[vars]`;
    /// 6. the playbook's defaults.
    pub fn host_vars(
        &self,
        host: &str,
        playbook_defaults: &Map<String, Value>,
        extra: &Map<String, Value>,
    ) -> Map<String, Value> {
        self.host_vars_with_sources(host, playbook_defaults, extra)
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    }
}

fn check_name(name: &Spanned<String>, what: &str, src: &Source) -> Result<(), InventoryError> {
    let n = name.get_ref();
    let bad = n.is_empty()
        || n.chars()
            .any(|c| c.is_whitespace() || PATTERN_CHARS.contains(&c));
    if bad {
        return Err(src.error(
            InventoryErrorKind::BadName,
            name.span(),
            format!(
                "{what} name `{n}` must be non-empty, without whitespace or any of {}",
                PATTERN_CHARS.iter().collect::<String>()
            ),
            "bad name",
        ));
    }
    Ok(())
}

fn parse_connection(c: &Spanned<String>, src: &Source) -> Result<Connection, InventoryError> {
    match c.get_ref().as_str() {
        "ssh" => Ok(Connection::Ssh),
        "local" => Ok(Connection::Local),
        other => {
            let suggestion = closest(other, Connection::NAMES.iter().copied());
            Err(src.error(
                InventoryErrorKind::BadConnection,
                c.span(),
                format!(
                    "unknown connection `{other}`, expected `ssh` or `local`{}",
                    did_you_mean(suggestion)
                ),
                "unknown connection",
            ))
        }
    }
}

/// A file's text, decrypted first when the whole file is encrypted.
fn read_maybe_encrypted(path: &Path, vault: &Vault) -> Result<String, InventoryError> {
    crate::vault::read_text(path, vault).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => InventoryError::plain(
            InventoryErrorKind::Vault,
            e.into_inner().map(|e| e.to_string()).unwrap_or_default(),
        ),
        _ => InventoryError::io(path, e),
    })
}

/// The prefix of an error about the ciphertext `cipher` in `src`: `FILE:LINE:COL: `.
fn cipher_position(src: &Source, cipher: &str) -> String {
    match src.text.find(cipher) {
        Some(offset) => {
            let (line, col) = src.position(offset);
            format!("{}:{line}:{col}: ", src.file)
        }
        None => format!("{}: ", src.file),
    }
}

/// Decrypts the vault values in `vars` (`where_`: "host `h1`: "); their names become secret.
fn decrypt_vars(
    mut vars: Map<String, Value>,
    where_: &str,
    src: &Source,
    vault: &Vault,
    secret_names: &mut BTreeSet<String>,
) -> Result<Map<String, Value>, InventoryError> {
    for (k, v) in vars.iter_mut() {
        let what = format!("{where_}variable `{k}`");
        let decrypted = vault
            .decrypt_tree(v, &what, &|c| cipher_position(src, c))
            .map_err(|e| InventoryError::plain(InventoryErrorKind::Vault, e.to_string()))?;
        if decrypted {
            secret_names.insert(k.clone());
        }
    }
    Ok(vars)
}

fn parse_secret(
    v: &Spanned<toml::Value>,
    src: &Source,
    vault: &Vault,
) -> Result<Secret, InventoryError> {
    match v.get_ref() {
        toml::Value::String(s) if crate::vault::is_value(s) => {
            let what = format!("{}become_password", cipher_position(src, s));
            vault
                .decrypt_value(s, &what)
                .map(Secret::new)
                .map_err(|e| InventoryError::plain(InventoryErrorKind::Vault, e.to_string()))
        }
        toml::Value::String(s) => Ok(Secret::new(s.clone())),
        // The message never shows the value.
        other => Err(src.error(
            InventoryErrorKind::BadSecret,
            v.span(),
            format!("become_password must be a string, not {}", other.type_str()),
            "not a string",
        )),
    }
}

/// Finds a cycle among group children and names its groups, e.g. `a -> b -> a`.
fn find_cycle(groups: &[(Spanned<String>, RawGroup)], src: &Source) -> Result<(), InventoryError> {
    let index: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.get_ref().as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; groups.len()];
    for start in 0..groups.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (group, next child to look at).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (g, ref mut next)) = path.last_mut() {
            let children = &groups[g].1.children;
            if *next == children.len() {
                state[g] = 2;
                path.pop();
                continue;
            }
            let child = &children[*next];
            *next += 1;
            let c = index[child.get_ref().as_str()];
            match state[c] {
                0 => {
                    state[c] = 1;
                    path.push((c, 0));
                }
                1 => {
                    let from = path.iter().position(|(x, _)| *x == c).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..]
                        .iter()
                        .map(|(x, _)| groups[*x].0.get_ref().as_str())
                        .collect();
                    names.push(child.get_ref());
                    return Err(src.error(
                        InventoryErrorKind::GroupCycle,
                        child.span(),
                        format!("group children form a cycle: {}", names.join(" -> ")),
                        "closes the cycle",
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Converts a TOML value to JSON (datetimes become their RFC 3339 text).
pub fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(table_to_json(t)),
    }
}

fn table_to_json(t: toml::Table) -> Map<String, Value> {
    t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()
}

/// Parses one `-e` argument: `KEY=VALUE`, `@FILE` or a JSON object.
///
/// `VALUE` is read as a TOML value when it is one (`n=3` gives a number, `flag=true` a bool,
/// `list=[1,2]` an array, `s="1.30"` a string), otherwise it is taken as text (`name=web01`).
/// Beware that `v=1.30` is the float 1.3: quote versions. `@FILE` reads a file of variables:
/// YAML (`.yml`, `.yaml`) or JSON (`.json`) as Ansible users have them, TOML otherwise; its
/// errors carry file:line:col. `{"k": …}` is a JSON object of variables (JSON has null).
pub fn parse_extra_var(arg: &str) -> Result<Map<String, Value>, InventoryError> {
    parse_extra_var_with(arg, &Vault::default()).map(|(vars, _)| vars)
}

/// Like [`parse_extra_var`], decrypting an encrypted file and vault values with `vault`; also
/// returns the names whose values came from the vault (secrets).
pub fn parse_extra_var_with(
    arg: &str,
    vault: &Vault,
) -> Result<(Map<String, Value>, BTreeSet<String>), InventoryError> {
    let (file, text) = match arg.strip_prefix('@') {
        Some(file) => (file, read_maybe_encrypted(Path::new(file), vault)?),
        None => ("-e", String::new()),
    };
    let src = Source {
        file: file.to_string(),
        text: &text,
    };
    let vars = if arg.starts_with('@') {
        vars_file(&src)?
    } else {
        parse_extra_var_text(arg)?
    };
    let mut names = BTreeSet::new();
    let vars = decrypt_vars(vars, "", &src, vault, &mut names)?;
    Ok((vars, names))
}

fn parse_extra_var_text(arg: &str) -> Result<Map<String, Value>, InventoryError> {
    if arg.trim_start().starts_with('{') {
        return match serde_json::from_str::<Value>(arg) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => unreachable!("a text starting with {{ is an object or an error"),
            Err(e) => Err(InventoryError::plain(
                InventoryErrorKind::ExtraVar,
                format!("-e `{arg}`: not a JSON object of variables: {e}"),
            )),
        };
    }
    let Some((key, value)) = arg.split_once('=') else {
        return Err(InventoryError::plain(
            InventoryErrorKind::ExtraVar,
            format!("-e `{arg}`: expected KEY=VALUE or @FILE"),
        ));
    };
    let key = key.trim();
    // Templates and scripts read it by name: `1foo` or `foo.bar` could never be read back.
    let mut chars = key.chars();
    let is_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        return Err(InventoryError::plain(
            InventoryErrorKind::ExtraVar,
            format!(
                "-e `{arg}`: `{key}` is not a variable name (a letter or _, then letters, digits or _)"
            ),
        ));
    }
    let parsed = value
        .parse::<toml::Value>()
        .map(toml_to_json)
        .unwrap_or_else(|_| Value::String(value.to_string()));
    let mut map = Map::new();
    map.insert(key.to_string(), parsed);
    Ok(map)
}

/// The variables of a `-e @FILE` (its text, decrypted): YAML or JSON by its extension, TOML
/// otherwise.
fn vars_file(src: &Source) -> Result<Map<String, Value>, InventoryError> {
    let (file, text) = (src.file.as_str(), src.text);
    let path = Path::new(file);
    let at = |offset: usize, message: String| {
        src.error(
            InventoryErrorKind::ExtraVar,
            offset..offset,
            message,
            "here",
        )
    };
    let value = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "yml" | "yaml" => serde_yaml::from_str::<Value>(text).map_err(|e| {
            let offset = e.location().map(|l| l.index()).unwrap_or(0);
            at(offset, e.to_string())
        })?,
        "json" => serde_json::from_str::<Value>(text).map_err(|e| {
            // serde_json counts lines and columns from 1.
            let line_start: usize = text
                .split_inclusive('\n')
                .take(e.line().saturating_sub(1))
                .map(str::len)
                .sum();
            let offset = (line_start + e.column().saturating_sub(1)).min(text.len());
            at(offset, e.to_string())
        })?,
        _ => {
            let table: toml::Table =
                toml::from_str(text).map_err(|e| InventoryError::toml(e, src))?;
            return Ok(table_to_json(table));
        }
    };
    match value {
        Value::Object(m) => Ok(m),
        // An empty YAML file.
        Value::Null => Ok(Map::new()),
        other => Err(at(
            0,
            format!(
                "{file} holds {}, not a map of variables",
                match other {
                    Value::Array(_) => "a list",
                    _ => "a single value",
                }
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(src: &str) -> Inventory {
        Inventory::parse(src, "inv/test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(src: &str) -> InventoryError {
        Inventory::parse(src, "inv/test.toml").expect_err("should fail")
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    const FULL: &str = r#"
[defaults]
user = "root"
port = 22
identity_file = "keys/id_lab"
known_hosts = "/srv/lab/known_hosts"
become = true
become_password = "hunter2"

[vars]
cluster = "demo"
level = "global"

[hosts.h2]
address = "10.77.0.12"

[hosts.h1]
address = "10.77.0.11"
port = 2222
connection = "local"
vars = { root = "/tmp/h1", level = "host" }

[hosts.h3]
user = "admin"
become = false
become_user = "ops"

[hosts.lone]

[groups.masters]
hosts = ["h1", "h2"]
children = ["etcd"]
vars = { vip = "10.77.0.100", level = "masters", role = "master" }

[groups.etcd]
hosts = ["h3"]
vars = { level = "etcd", role = "etcd" }

[groups.aaa]
hosts = ["h3"]
vars = { role = "aaa", zone = "aaa" }

[groups.zzz]
hosts = ["h3"]
[groups.zzz.vars]
zone = "zzz"
"#;

    #[test]
    fn hosts_in_file_order_with_defaults_merged() {
        let inv = parse(FULL);
        let names: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h2", "h1", "h3", "lone"]);
        let h1 = inv.host("h1").unwrap();
        assert_eq!(h1.address, "10.77.0.11");
        assert_eq!(h1.port, 2222);
        assert_eq!(h1.connection, Connection::Local);
        assert_eq!(h1.user.as_deref(), Some("root"));
        assert_eq!(h1.identity_file, Some(PathBuf::from("inv/keys/id_lab")));
        assert_eq!(h1.known_hosts, Some(PathBuf::from("/srv/lab/known_hosts")));
        assert!(h1.become_);
        assert_eq!(h1.become_user, "root");
        assert_eq!(h1.become_password.as_ref().unwrap().expose(), "hunter2");
        let h3 = inv.host("h3").unwrap();
        assert_eq!(h3.address, "h3");
        assert_eq!(h3.port, 22);
        assert_eq!(h3.connection, Connection::Ssh);
        assert_eq!(h3.user.as_deref(), Some("admin"));
        assert!(!h3.become_);
        assert_eq!(h3.become_user, "ops");
    }

    #[test]
    fn minimal_host_gets_builtin_defaults() {
        let inv = parse("[hosts.x]\n");
        let x = inv.host("x").unwrap();
        assert_eq!(x.address, "x");
        assert_eq!(x.port, 22);
        assert_eq!(x.user, None);
        assert_eq!(x.connection, Connection::Ssh);
        assert_eq!(x.identity_file, None);
        assert!(!x.become_);
        assert_eq!(x.become_user, "root");
        assert!(x.become_password.is_none());
    }

    #[test]
    fn groups_include_children_and_implicit_groups() {
        let inv = parse(FULL);
        let groups = inv.groups();
        assert_eq!(groups["masters"], ["h1", "h2", "h3"]);
        assert_eq!(groups["etcd"], ["h3"]);
        assert_eq!(groups["all"], ["h1", "h2", "h3", "lone"]);
        assert_eq!(groups["ungrouped"], ["lone"]);
        assert_eq!(inv.group_members("masters").unwrap(), ["h2", "h1", "h3"]);
        assert_eq!(inv.group_names_of("h3"), ["aaa", "etcd", "masters", "zzz"]);
        assert_eq!(inv.group_names_of("lone"), ["ungrouped"]);
    }

    #[test]
    fn precedence_host_over_child_group_over_parent_over_global_over_playbook() {
        let inv = parse(FULL);
        let defaults = map(json!({"level": "playbook", "only_playbook": 1}));
        let none = Map::new();
        let h1 = inv.host_vars("h1", &defaults, &none);
        assert_eq!(h1["level"], "host");
        assert_eq!(h1["only_playbook"], 1);
        assert_eq!(h1["cluster"], "demo");
        assert_eq!(h1["vip"], "10.77.0.100");
        let h2 = inv.host_vars("h2", &defaults, &none);
        assert_eq!(h2["level"], "masters");
        // h3 is in etcd, a child of masters: etcd wins.
        let h3 = inv.host_vars("h3", &defaults, &none);
        assert_eq!(h3["level"], "etcd");
        // role: aaa, etcd, masters set it. Order: aaa, masters, etcd, zzz → etcd.
        assert_eq!(h3["role"], "etcd");
        // Unrelated groups: the later name wins.
        assert_eq!(h3["zone"], "zzz");
        let lone = inv.host_vars("lone", &defaults, &none);
        assert_eq!(lone["level"], "global");
        let bare = parse("[hosts.x]\n");
        assert_eq!(bare.host_vars("x", &defaults, &none)["level"], "playbook");
    }

    #[test]
    fn extra_vars_win_over_everything_but_magic() {
        let inv = parse(FULL);
        let extra = map(json!({"level": "extra", "inventory_hostname": "nope"}));
        let vars = inv.host_vars("h1", &Map::new(), &extra);
        assert_eq!(vars["level"], "extra");
        assert_eq!(vars["inventory_hostname"], "h1");
    }

    #[test]
    fn child_over_parent_even_when_parent_sorts_later() {
        let inv = parse(
            r#"
[hosts.x]
[groups.z]
children = ["a"]
vars = { v = "z" }
[groups.a]
hosts = ["x"]
vars = { v = "a" }
[groups.b]
hosts = ["x"]
vars = { v = "b", w = "b" }
"#,
        );
        let vars = inv.host_vars_with_sources("x", &Map::new(), &Map::new());
        let get = |n: &str| vars.iter().find(|(k, _, _)| k == n).unwrap().clone();
        // Order of application: b, z, a.
        assert_eq!(
            get("v"),
            ("v".into(), json!("a"), VarSource::Group("a".into()))
        );
        assert_eq!(
            get("w"),
            ("w".into(), json!("b"), VarSource::Group("b".into()))
        );
    }

    #[test]
    fn sources_are_reported() {
        let inv = parse(FULL);
        let defaults = map(json!({"only_playbook": 1}));
        let extra = map(json!({"e": true}));
        let vars = inv.host_vars_with_sources("h3", &defaults, &extra);
        let names: Vec<&str> = vars.iter().map(|(k, _, _)| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let src = |n: &str| vars.iter().find(|(k, _, _)| k == n).unwrap().2.clone();
        assert_eq!(src("only_playbook"), VarSource::Playbook);
        assert_eq!(src("cluster"), VarSource::Global);
        assert_eq!(src("vip"), VarSource::Group("masters".into()));
        assert_eq!(src("level"), VarSource::Group("etcd".into()));
        assert_eq!(src("e"), VarSource::Extra);
        assert_eq!(src("inventory_hostname"), VarSource::Magic);
        assert_eq!(src("group_names"), VarSource::Magic);
        let gn = &vars.iter().find(|(k, _, _)| k == "group_names").unwrap().1;
        assert_eq!(gn, &json!(["aaa", "etcd", "masters", "zzz"]));
        let h1 = inv.host_vars_with_sources("h1", &defaults, &extra);
        let root = h1.iter().find(|(k, _, _)| k == "root").unwrap();
        assert_eq!(root.2, VarSource::Host("h1".into()));
        assert_eq!(root.1, json!("/tmp/h1"));
    }

    #[test]
    fn variables_keep_toml_types() {
        let inv = parse(
            "[vars]\nn = 3\nf = 1.5\nb = true\nl = [1, \"two\"]\nt = { k = \"v\" }\nd = 1979-05-27\n",
        );
        let v = inv.global_vars();
        assert_eq!(v["n"], json!(3));
        assert_eq!(v["f"], json!(1.5));
        assert_eq!(v["b"], json!(true));
        assert_eq!(v["l"], json!([1, "two"]));
        assert_eq!(v["t"], json!({"k": "v"}));
        assert_eq!(v["d"], json!("1979-05-27"));
    }

    #[test]
    fn become_password_never_in_debug() {
        let inv = parse(FULL);
        let dbg = format!("{inv:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("[secret]"));
        let h = format!("{:?}", inv.host("h1").unwrap());
        assert!(!h.contains("hunter2"));
    }

    #[test]
    fn become_password_masked_in_error_source() {
        let e = err("[defaults]\nbecome_password = \"hunter2\"\nport = \"x\"\n");
        let src = e.0.source_code.inner().clone();
        assert!(!src.contains("hunter2"), "{src}");
        assert!(src.contains("become_password = \"*******\""));
        assert!(!format!("{e:?}").contains("hunter2"));
        let e = err("[defaults]\nbecome_password = 1234\n");
        assert_eq!(e.kind(), InventoryErrorKind::BadSecret);
        assert_eq!(
            e.to_string(),
            "inv/test.toml:2:19: become_password must be a string, not integer"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = err("[hosts.a]\naddress = \"x\n");
        assert_eq!(e.kind(), InventoryErrorKind::Toml);
        // toml points at the end of the unterminated string.
        assert_eq!((e.line(), e.column()), (Some(2), Some(13)));
        assert_eq!(e.file(), "inv/test.toml");
        assert!(e.to_string().starts_with("inv/test.toml:2:13: "), "{e}");
        let e = err("[hosts.a]

  [hosts.a]
");
        assert_eq!(e.to_string(), "inv/test.toml:3:10: duplicate key `a`");
    }

    #[test]
    fn type_error_has_position() {
        let e = err("[hosts.a]\nport = \"twenty\"\n");
        assert!(e.to_string().starts_with("inv/test.toml:2:8: "), "{e}");
        assert!(e.message().contains("u16"), "{e}");
        let e = err("[hosts.a]\nport = 70000\n");
        assert!(e.to_string().starts_with("inv/test.toml:2:8: "), "{e}");
    }

    #[test]
    fn unknown_keys_name_key_and_accepted_ones() {
        let e = err("[hosts.a]\nadress = \"x\"\n");
        assert!(e.to_string().starts_with("inv/test.toml:2:1: "), "{e}");
        assert!(e.message().contains("`adress`"), "{e}");
        assert!(e.message().contains("`address`"), "{e}");
        let e = err("[defaults]\nusr = \"x\"\n");
        assert!(e.to_string().starts_with("inv/test.toml:2:1: "), "{e}");
        assert!(e.message().contains("`user`"), "{e}");
        let e = err("[hosts.a]\n[groups.g]\nhost = [\"a\"]\n");
        assert!(e.to_string().starts_with("inv/test.toml:3:1: "), "{e}");
        assert!(e.message().contains("`children`"), "{e}");
        let e = err("[host.a]\n");
        assert!(e.to_string().starts_with("inv/test.toml:1:2: "), "{e}");
        assert!(e.message().contains("`hosts`"), "{e}");
    }

    #[test]
    fn unknown_host_in_group_suggests_closest() {
        let e = err("[hosts.web1]\n[hosts.db1]\n[groups.g]\nhosts = [\"web1\", \"wbe1\"]\n");
        assert_eq!(e.kind(), InventoryErrorKind::UnknownHost);
        assert_eq!(
            e.to_string(),
            "inv/test.toml:4:18: group `g` lists unknown host `wbe1`; did you mean `web1`?"
        );
        let e = err("[hosts.web1]\n[groups.g]\nhosts = [\"zzzzzz\"]\n");
        assert_eq!(
            e.to_string(),
            "inv/test.toml:3:10: group `g` lists unknown host `zzzzzz`"
        );
    }

    #[test]
    fn unknown_child_group() {
        let e = err("[groups.masters]\n[groups.k8s]\nchildren = [\"master\"]\n");
        assert_eq!(e.kind(), InventoryErrorKind::UnknownGroup);
        assert_eq!(
            e.to_string(),
            "inv/test.toml:3:13: group `k8s` lists unknown child group `master`; did you mean `masters`?"
        );
    }

    #[test]
    fn group_cycle_names_groups() {
        let e = err(
            "[groups.a]\nchildren = [\"b\"]\n[groups.b]\nchildren = [\"c\"]\n[groups.c]\nchildren = [\"a\"]\n",
        );
        assert_eq!(e.kind(), InventoryErrorKind::GroupCycle);
        assert_eq!(
            e.to_string(),
            "inv/test.toml:6:13: group children form a cycle: a -> b -> c -> a"
        );
        let e = err("[groups.self]\nchildren = [\"self\"]\n");
        assert_eq!(
            e.to_string(),
            "inv/test.toml:2:13: group children form a cycle: self -> self"
        );
    }

    #[test]
    fn bad_connection_kind() {
        let e = err("[defaults]\nconnection = \"shh\"\n");
        assert_eq!(e.kind(), InventoryErrorKind::BadConnection);
        assert_eq!(
            e.to_string(),
            "inv/test.toml:2:14: unknown connection `shh`, expected `ssh` or `local`; did you mean `ssh`?"
        );
        let e = err("[hosts.a]\nconnection = \"winrm\"\n");
        assert_eq!(
            e.to_string(),
            "inv/test.toml:2:14: unknown connection `winrm`, expected `ssh` or `local`"
        );
    }

    #[test]
    fn bad_names() {
        let e = err("[hosts.\"web:1\"]\n");
        assert_eq!(e.kind(), InventoryErrorKind::BadName);
        assert!(
            e.to_string()
                .starts_with("inv/test.toml:1:8: host name `web:1`"),
            "{e}"
        );
        let e = err("[groups.all]\nvars = { a = 1 }\n");
        assert_eq!(
            e.to_string(),
            "inv/test.toml:1:9: `all` is a built-in group and cannot be defined"
        );
        let e = err("[hosts.a]\n[groups.a]\n");
        assert!(e
            .to_string()
            .starts_with("inv/test.toml:2:9: `a` is both a host and a group"));
    }

    #[test]
    fn error_is_a_miette_diagnostic_with_span() {
        let e = err("[hosts.a]\n[groups.g]\nhosts = [\"b\"]\n");
        let labels: Vec<LabeledSpan> = e.labels().unwrap().collect();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].offset(), "[hosts.a]\n[groups.g]\nhosts = [".len());
        assert_eq!(labels[0].len(), 3);
        assert!(e.source_code().is_some());
    }

    #[test]
    fn load_reads_file_and_reports_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.toml");
        std::fs::write(&path, "[hosts.a]\nidentity_file = \"id\"\n").unwrap();
        let inv = Inventory::load(&path).unwrap();
        assert_eq!(
            inv.host("a").unwrap().identity_file,
            Some(dir.path().join("id"))
        );
        let missing = dir.path().join("nope.toml");
        let e = Inventory::load(&missing).unwrap_err();
        assert_eq!(e.kind(), InventoryErrorKind::Io);
        assert!(e
            .to_string()
            .starts_with(&format!("{}: ", missing.display())));
    }

    #[test]
    fn extra_var_values_are_typed() {
        assert_eq!(parse_extra_var("n=3").unwrap(), map(json!({"n": 3})));
        assert_eq!(
            parse_extra_var("flag=true").unwrap(),
            map(json!({"flag": true}))
        );
        assert_eq!(
            parse_extra_var("name=web01").unwrap(),
            map(json!({"name": "web01"}))
        );
        assert_eq!(
            parse_extra_var("v=\"1.30\"").unwrap(),
            map(json!({"v": "1.30"}))
        );
        assert_eq!(
            parse_extra_var("l=[1, 2]").unwrap(),
            map(json!({"l": [1, 2]}))
        );
        assert_eq!(parse_extra_var("s=a=b").unwrap(), map(json!({"s": "a=b"})));
        assert_eq!(parse_extra_var("e=").unwrap(), map(json!({"e": ""})));
        assert_eq!(
            parse_extra_var("x=1\ny=2").unwrap(),
            map(json!({"x": "1\ny=2"}))
        );
        let e = parse_extra_var("novalue").unwrap_err();
        assert_eq!(e.kind(), InventoryErrorKind::ExtraVar);
        assert_eq!(e.to_string(), "-e `novalue`: expected KEY=VALUE or @FILE");
        assert!(parse_extra_var("=1").is_err());
    }

    #[test]
    fn extra_var_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vars.toml");
        std::fs::write(&path, "a = 1\nb = \"two\"\n").unwrap();
        let vars = parse_extra_var(&format!("@{}", path.display())).unwrap();
        assert_eq!(vars, map(json!({"a": 1, "b": "two"})));
        std::fs::write(&path, "a = 1\nb = \n").unwrap();
        let e = parse_extra_var(&format!("@{}", path.display())).unwrap_err();
        assert_eq!(e.kind(), InventoryErrorKind::Toml);
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2:5: ", path.display())),
            "{e}"
        );
        let e = parse_extra_var("@/nonexistent/vars.toml").unwrap_err();
        assert_eq!(e.kind(), InventoryErrorKind::Io);
    }

    /// Ansible users' vars files (YAML, JSON) and inline JSON, with null; errors name the place.
    #[test]
    fn extra_vars_from_yaml_json_and_inline_json() {
        let dir = tempfile::tempdir().unwrap();
        let yml = dir.path().join("vars.yml");
        std::fs::write(&yml, "a: 1\nb: [x, y]\nc: null\nd: {e: true}\n").unwrap();
        let want = map(json!({"a": 1, "b": ["x", "y"], "c": null, "d": {"e": true}}));
        assert_eq!(
            parse_extra_var(&format!("@{}", yml.display())).unwrap(),
            want
        );
        let js = dir.path().join("vars.json");
        std::fs::write(
            &js,
            r#"{"a": 1, "b": ["x", "y"], "c": null, "d": {"e": true}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_extra_var(&format!("@{}", js.display())).unwrap(),
            want
        );
        assert_eq!(
            parse_extra_var(r#"{"a": 1, "b": ["x", "y"], "c": null, "d": {"e": true}}"#).unwrap(),
            want
        );

        std::fs::write(&yml, "a: 1\nb: [x\n").unwrap();
        let e = parse_extra_var(&format!("@{}", yml.display())).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("{}:", yml.display())),
            "{e}"
        );
        assert!(e.line().is_some(), "{e}");
        std::fs::write(&js, "{\n  \"a\": 1,\n  \"b\": ]\n}").unwrap();
        let e = parse_extra_var(&format!("@{}", js.display())).unwrap_err();
        assert_eq!((e.line(), e.column()), (Some(3), Some(8)), "{e}");
        std::fs::write(&yml, "- a\n- b\n").unwrap();
        let e = parse_extra_var(&format!("@{}", yml.display())).unwrap_err();
        assert!(
            e.to_string().contains("a list, not a map of variables"),
            "{e}"
        );
        assert!(parse_extra_var("{\"a\": }").is_err());
    }

    #[test]
    fn closest_suggests_only_near_names() {
        assert_eq!(closest("h3", ["h1", "h2"]), Some("h1"));
        assert_eq!(closest("mastres", ["masters", "workers"]), Some("masters"));
        assert_eq!(closest("database", ["web", "lb"]), None);
    }
}

#[cfg(test)]
mod example_inventories {
    use super::*;

    fn example(name: &str) -> Inventory {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../inventories")
            .join(name);
        Inventory::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn localhost() {
        let inv = example("localhost.toml");
        let hosts: Vec<&HostEntry> = inv.hosts().collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, "localhost");
        assert_eq!(hosts[0].connection, Connection::Local);
        let vars = inv.host_vars("localhost", &Map::new(), &Map::new());
        assert_eq!(vars["root"], ".playbook-demo");
    }

    #[test]
    fn local_three() {
        let inv = example("local-three.toml");
        let names: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(inv.hosts().all(|h| h.connection == Connection::Local));
        assert_eq!(inv.groups()["first"], ["a"]);
        assert_eq!(inv.groups()["others"], ["b", "c"]);
        for h in ["a", "b", "c"] {
            let vars = inv.host_vars(h, &Map::new(), &Map::new());
            assert_eq!(vars["root"], format!(".playbook-demo/{h}"));
        }
        assert_eq!(
            crate::pattern::select(&inv, "all:!first").unwrap(),
            ["b", "c"]
        );
    }
}
