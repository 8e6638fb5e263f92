//! The package modules over real SSH on two of the lab's light hosts (h7 as `g`, h8 as `h`),
//! against repositories the tests build themselves under /srv/lab/shared (the same path on every
//! host): an rpm repository (rpmbuild + createrepo_c) used with dnf + rpm, and a deb repository
//! (dpkg-deb + dpkg-scanpackages) used with apt. The hosts are Debian, so `package` picks apt.
//!
//! Needs on the machine: dnf rpm createrepo-c dpkg-dev (`tests/lab/lab.sh deps`). Skipped, saying
//! so, when the lab is not up with at least 8 light hosts or the tools are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{lab_exec, lab_hosts, snapshot_tree, Output, Project, LAB_DIR};

const YUM_HOST: &str = "h7";
const APT_HOST: &str = "h8";

/// A directory under /srv/lab/shared, removed at the end of the test.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pbpkg-")
        .tempdir_in(format!("{LAB_DIR}/shared"))
        .unwrap();
    sh(&format!("chmod 0755 {}", dir.path().display()));
    dir
}

/// Runs a shell command on the machine; it must succeed.
fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command on a lab host and returns its exit status and output.
fn on_host(host: &str, script: &str) -> (i32, String) {
    let out = lab_exec(host, &format!("{{ {script}\n}} 2>&1; echo \"rc=$?\""));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, rc) = text.trim_end().rsplit_once("rc=").unwrap();
    (rc.parse().unwrap(), body.to_string())
}

/// A file of a lab host under /opt, as the machine sees it (the host's overlay upper dir).
fn opt_file(host: &str, rel: &str) -> PathBuf {
    PathBuf::from(format!("{LAB_DIR}/hosts/{host}/ov/opt/upper/{rel}"))
}

/// The lab project with `g` (h7) and `h` (h8), or None (skipped) when the lab or tools are missing.
fn project(test: &str) -> Option<Project> {
    let p = Project::lab(test)?;
    if lab_hosts().unwrap_or(0) < 8 {
        crate::support::lab_skip(test, "needs the lab with 8 light hosts");
        return None;
    }
    for (host, tool) in [
        (YUM_HOST, "dnf"),
        (YUM_HOST, "rpm"),
        (APT_HOST, "dpkg-scanpackages"),
    ] {
        let machine = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        if !machine.status.success() || on_host(host, &format!("command -v {tool}")).0 != 0 {
            crate::support::lab_skip(
                test,
                &format!(
                    "{tool} missing on the machine or not yet visible on {host} \
                     (tests/lab/lab.sh deps; tools installed after `up` may need \
                     `echo 2 > /proc/sys/vm/drop_caches`)"
                ),
            );
            return None;
        }
    }
    p.hosts(&["g", "h"], &[]);
    Some(p)
}

/// The summaries and messages of a run's tasks, in order, as "host task status summary|msg".
fn lines(out: &Output) -> Vec<String> {
    out.task_ends()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["host"].as_str().unwrap_or(""),
                e["module"].as_str().unwrap_or(""),
                e["status"].as_str().unwrap_or(""),
                e["summary"].as_str().or(e["msg"].as_str()).unwrap_or("")
            )
        })
        .collect()
}

fn play(p: &Project, name: &str, body: &str, extra: &[&str]) -> Output {
    p.file(name, body);
    p.play(name, extra)
}

// ------------------------------------------------------------------------------------ rpm / yum

const SPEC: &str = r#"Name: pbhello
Version: %{ver}
Release: 1
Summary: playbook test package
License: MIT
BuildArch: noarch
%description
A package the playbook tests install.
%install
mkdir -p %{buildroot}/opt/pbhello
echo "hello %{ver}" > %{buildroot}/opt/pbhello/hello.txt
%files
/opt/pbhello/hello.txt
"#;

/// Builds pbhello `ver` into `dir/repo` and (re)creates the repository metadata. rpm's database
/// for the build stays in `dir` too.
fn rpm_repo(dir: &Path, ver: &str) {
    std::fs::write(dir.join("pbhello.spec"), SPEC).unwrap();
    let d = dir.display();
    sh(&format!(
        "set -e; mkdir -p {d}/repo {d}/rpmdb; cd {d}
         rpmbuild -bb --quiet --define '_topdir {d}/rpmbuild' --define '_dbpath {d}/rpmdb' \
           --define 'ver {ver}' pbhello.spec >/dev/null
         cp rpmbuild/RPMS/noarch/pbhello-{ver}-1.noarch.rpm repo/
         createrepo_c --quiet repo"
    ));
}

fn yum_host_reset() {
    // The host's own state from an earlier, interrupted run: the package, the repo file.
    lab_exec(
        YUM_HOST,
        "mkdir -p /etc/yum.repos.d /etc/dnf/vars; echo 9 > /etc/dnf/vars/releasever; \
         rpm -e pbhello >/dev/null 2>&1; rm -f /etc/yum.repos.d/pbtest.repo; true",
    );
}

#[test]
fn yum_installs_upgrades_and_removes_with_dnf_and_rpm() {
    let Some(p) = project("yum_installs_upgrades_and_removes_with_dnf_and_rpm") else {
        return;
    };
    let shared = shared_dir();
    let repo = shared.path().join("repo");
    rpm_repo(shared.path(), "1.0");
    yum_host_reset();
    let hello = opt_file(YUM_HOST, "pbhello/hello.txt");

    // The repository file, through yum_repository.
    let repo_pb = format!(
        r#"on("g", yum_repository(#{{ name: "pbtest", description: "playbook test",
                                     baseurl: "file://{}", gpgcheck: false }}));"#,
        repo.display()
    );
    let out = play(&p, "repo.rhai", &repo_pb, &[]);
    out.assert_code(0);
    assert_eq!(
        lines(&out),
        ["g yum_repository changed create /etc/yum.repos.d/pbtest.repo"]
    );
    let repo_file = format!("{LAB_DIR}/hosts/{YUM_HOST}/ov/etc/upper/yum.repos.d/pbtest.repo");
    assert_eq!(
        std::fs::read_to_string(&repo_file).unwrap(),
        format!(
            "[pbtest]\nname=playbook test\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\n",
            repo.display()
        )
    );
    assert_eq!(play(&p, "repo.rhai", &repo_pb, &[]).total("changed"), 0);

    // Check mode predicts exactly the install and changes nothing.
    let install = r#"on("g", yum(#{ name: "pbhello", enablerepo: "pbtest" }));"#;
    let before = snapshot_tree(&opt_file(YUM_HOST, ""));
    let check = play(&p, "install.rhai", install, &["--check"]);
    check.assert_code(0);
    assert_eq!(lines(&check), ["g yum changed install: pbhello"]);
    assert_eq!(snapshot_tree(&opt_file(YUM_HOST, "")), before);
    assert_ne!(
        on_host(YUM_HOST, "rpm -q pbhello").0,
        0,
        "check installed it"
    );

    // The real run installs it; the second run changes nothing.
    let real = play(&p, "install.rhai", install, &[]);
    real.assert_code(0);
    assert_eq!(lines(&real), ["g yum changed install: pbhello"]);
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");
    let (rc, q) = on_host(YUM_HOST, "rpm -q pbhello");
    assert_eq!((rc, q.trim()), (0, "pbhello-1.0-1.noarch"));
    let again = play(&p, "install.rhai", install, &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    // The repository gains 1.1: `present` is still satisfied, `latest` upgrades.
    rpm_repo(shared.path(), "1.1");
    let latest = r#"on("g", yum(#{ name: ["pbhello"], state: "latest", update_cache: true }));"#;
    let check = play(&p, "latest.rhai", latest, &["--check"]);
    check.assert_code(0);
    assert_eq!(
        lines(&check),
        ["g yum changed upgrade: pbhello 1.0-1 -> 1.1-1"]
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");
    assert_eq!(play(&p, "install.rhai", install, &[]).total("changed"), 0);
    let real = play(&p, "latest.rhai", latest, &[]);
    real.assert_code(0);
    assert_eq!(
        lines(&real),
        ["g yum changed upgrade: pbhello 1.0-1 -> 1.1-1"]
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.1\n");
    assert_eq!(play(&p, "latest.rhai", latest, &[]).total("changed"), 0);

    // A name no repository has fails, naming it, in check mode too; nothing is installed.
    let missing = r#"on("g", yum(#{ name: ["pbhello", "pbnosuch"], state: "latest" }));"#;
    for extra in [&["--check"][..], &[]] {
        let out = play(&p, "missing.rhai", missing, extra);
        out.assert_code(2);
        let l = lines(&out);
        assert!(
            l[0].starts_with("g yum failed") && l[0].contains("Unable to find a match: pbnosuch"),
            "{l:?}"
        );
    }

    // absent removes it.
    let absent = r#"on("g", yum(#{ name: "pbhello", state: "absent" }));"#;
    let check = play(&p, "absent.rhai", absent, &["--check"]);
    assert_eq!(lines(&check), ["g yum changed remove: pbhello"]);
    assert!(hello.exists());
    let real = play(&p, "absent.rhai", absent, &[]);
    real.assert_code(0);
    assert_eq!(lines(&real), ["g yum changed remove: pbhello"]);
    assert!(!hello.exists());
    assert_ne!(on_host(YUM_HOST, "rpm -q pbhello").0, 0);
    assert_eq!(play(&p, "absent.rhai", absent, &[]).total("changed"), 0);

    // The repository file goes too.
    let gone = r#"on("g", yum_repository(#{ name: "pbtest", state: "absent" }));"#;
    let out = play(&p, "gone.rhai", gone, &[]);
    assert_eq!(
        lines(&out),
        ["g yum_repository changed remove /etc/yum.repos.d/pbtest.repo"]
    );
    assert!(!Path::new(&repo_file).exists());
    yum_host_reset();
}

/// An HTTP server for `dir` on the lab bridge (10.77.0.1), stopped on drop. dnf reads a
/// `file://` repository's metadata in place, so only a remote repository has a metadata cache
/// that can be stale.
struct HttpRepo {
    child: std::process::Child,
    url: String,
}

impl HttpRepo {
    fn serve(dir: &Path) -> Self {
        let port = 20000 + std::process::id() % 20000;
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "10.77.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        // Built first, so the server is stopped (and waited for) on every path.
        let server = HttpRepo {
            child,
            url: format!("http://10.77.0.1:{port}"),
        };
        for _ in 0..50 {
            let probe = format!("curl -fsS -o /dev/null {}/", server.url);
            if on_host(YUM_HOST, &probe).0 == 0 {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the test's HTTP server at {} does not answer", server.url);
    }
}

impl Drop for HttpRepo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn yum_reads_a_repository_changed_above_however_fresh_the_cache() {
    let Some(p) = project("yum_reads_a_repository_changed_above_however_fresh_the_cache") else {
        return;
    };
    let shared = shared_dir();
    rpm_repo(shared.path(), "1.0");
    yum_host_reset();
    let http = HttpRepo::serve(shared.path());
    let hello = opt_file(YUM_HOST, "pbhello/hello.txt");
    let play_text = |description: &str| {
        format!(
            r#"on("g", [
    yum_repository(#{{ name: "pbtest", description: "{description}",
                       baseurl: "{}/repo", gpgcheck: false }}),
    yum(#{{ name: "pbhello", state: "latest" }}),
]);"#,
            http.url
        )
    };

    // A repository added above: check mode assumes what it offers, the run installs from it.
    let first = play_text("playbook test");
    let check = play(&p, "repo.rhai", &first, &["--check"]);
    check.assert_code(0);
    let l = lines(&check);
    assert!(
        l[1].starts_with("g yum changed install: pbhello; assumed available"),
        "{l:?}"
    );
    let real = play(&p, "repo.rhai", &first, &[]);
    real.assert_code(0);
    assert_eq!(lines(&real)[1], "g yum changed install: pbhello");
    assert_eq!(check.changed(), real.changed());
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");

    // The repository gains 1.1, but dnf's metadata cache is fresh: `latest` sees 1.0 (this is
    // what makes the next step mean something).
    rpm_repo(shared.path(), "1.1");
    let cached = play(&p, "repo.rhai", &first, &[]);
    cached.assert_code(0);
    assert_eq!(cached.total("changed"), 0, "{}", cached.stdout);

    // The repository file changes above the package task: its metadata is read again.
    let changed = play_text("playbook test, changed");
    let real = play(&p, "repo.rhai", &changed, &[]);
    real.assert_code(0);
    assert_eq!(
        lines(&real),
        [
            "g yum_repository changed update /etc/yum.repos.d/pbtest.repo",
            "g yum changed upgrade: pbhello 1.0-1 -> 1.1-1"
        ]
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.1\n");
    let again = play(&p, "repo.rhai", &changed, &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    yum_host_reset();
}

// ------------------------------------------------------------------------------------ deb / apt

/// Builds pbhello-deb `ver` into `dir/deb` and rewrites the repository's Packages index.
fn deb_repo(dir: &Path, ver: &str) {
    let d = dir.display();
    let root = format!("{d}/build-{ver}");
    std::fs::create_dir_all(format!("{root}/DEBIAN")).unwrap();
    std::fs::create_dir_all(format!("{root}/opt/pbhello-deb")).unwrap();
    std::fs::write(
        format!("{root}/DEBIAN/control"),
        format!(
            "Package: pbhello-deb\nVersion: {ver}\nArchitecture: all\n\
             Maintainer: playbook tests <tests@example.invalid>\n\
             Description: a package the playbook tests install\n"
        ),
    )
    .unwrap();
    std::fs::write(
        format!("{root}/opt/pbhello-deb/hello.txt"),
        format!("hello {ver}\n"),
    )
    .unwrap();
    sh(&format!(
        "set -e; mkdir -p {d}/deb
         dpkg-deb --root-owner-group --build {root} {d}/deb/pbhello-deb_{ver}_all.deb >/dev/null
         cd {d}/deb && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages"
    ));
}

/// The task that adds the test's deb repository in `dir` as an apt source.
fn apt_source_task(dir: &Path) -> String {
    format!(
        r#"    copy(#{{ dest: "/etc/apt/sources.list.d/pbtest.list",
             content: "deb [trusted=yes] file:{}/deb ./\n" }})"#,
        dir.display()
    )
}

fn apt_host_reset() {
    lab_exec(
        APT_HOST,
        "dpkg --purge pbhello-deb >/dev/null 2>&1; rm -f /etc/apt/sources.list.d/pbtest.list; \
         rm -f /var/lib/apt/lists/*pbpkg-*; true",
    );
}

#[test]
fn apt_installs_upgrades_and_package_removes_on_debian() {
    let Some(p) = project("apt_installs_upgrades_and_package_removes_on_debian") else {
        return;
    };
    let shared = shared_dir();
    deb_repo(shared.path(), "1.0");
    apt_host_reset();
    let hello = opt_file(APT_HOST, "pbhello-deb/hello.txt");

    // The source and a cache update (alone: not a change of its own).
    let source = format!(
        "on(\"h\", [\n{},\n    apt(#{{ update_cache: true }}),\n]);",
        apt_source_task(shared.path())
    );
    let out = play(&p, "source.rhai", &source, &[]);
    out.assert_code(0);
    let l = lines(&out);
    assert_eq!(
        l[1], "h apt ok update cache (/etc/apt/sources.list.d/pbtest.list is newer than the cache)",
        "{l:?}"
    );

    // Check mode predicts exactly the install and changes nothing.
    let install =
        r#"on("h", apt(#{ name: "pbhello-deb", update_cache: true, cache_valid_time: 3600 }));"#;
    let before = snapshot_tree(&opt_file(APT_HOST, ""));
    let check = play(&p, "install.rhai", install, &["--check"]);
    check.assert_code(0);
    assert_eq!(lines(&check), ["h apt changed install: pbhello-deb"]);
    assert_eq!(snapshot_tree(&opt_file(APT_HOST, "")), before);
    assert_ne!(on_host(APT_HOST, "dpkg -s pbhello-deb").0, 0);

    let real = play(&p, "install.rhai", install, &[]);
    real.assert_code(0);
    assert_eq!(lines(&real), ["h apt changed install: pbhello-deb"]);
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");
    let (rc, status) = on_host(APT_HOST, "dpkg -s pbhello-deb");
    assert!(
        rc == 0 && status.contains("Status: install ok installed"),
        "{status}"
    );
    let again = play(&p, "install.rhai", install, &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    // 1.1 arrives; check mode decides from the cache as it is (and says so), the cache update
    // shows it, and `latest` upgrades.
    deb_repo(shared.path(), "1.1");
    let latest = r#"on("h", apt(#{ name: "pbhello-deb", state: "latest" }));"#;
    let stale = play(&p, "latest.rhai", latest, &["--check"]);
    assert_eq!(stale.total("changed"), 0, "the cache does not know 1.1 yet");
    play(&p, "source.rhai", &source, &[]).assert_code(0);
    let check = play(&p, "latest.rhai", latest, &["--check"]);
    check.assert_code(0);
    assert_eq!(
        lines(&check),
        ["h apt changed upgrade: pbhello-deb 1.0 -> 1.1"]
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");
    let real = play(&p, "latest.rhai", latest, &[]);
    real.assert_code(0);
    assert_eq!(
        lines(&real),
        ["h apt changed upgrade: pbhello-deb 1.0 -> 1.1"]
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.1\n");
    assert_eq!(play(&p, "latest.rhai", latest, &[]).total("changed"), 0);

    // A package no source has fails with its name, in check mode too.
    let missing = r#"on("h", apt(#{ name: ["pbhello-deb", "pbnosuch-deb"] }));"#;
    for extra in [&["--check"][..], &[]] {
        let out = play(&p, "missing.rhai", missing, extra);
        out.assert_code(2);
        let l = lines(&out);
        assert!(
            l[0].starts_with("h apt failed")
                && l[0].contains("Unable to locate package pbnosuch-deb"),
            "{l:?}"
        );
    }

    // `package` on this Debian host is apt: it removes the package.
    let absent = r#"on("h", package(#{ name: "pbhello-deb", state: "absent" }));"#;
    let check = play(&p, "absent.rhai", absent, &["--check"]);
    assert_eq!(lines(&check), ["h package changed remove: pbhello-deb"]);
    assert!(hello.exists());
    let real = play(&p, "absent.rhai", absent, &[]);
    real.assert_code(0);
    assert_eq!(lines(&real), ["h package changed remove: pbhello-deb"]);
    assert!(!hello.exists());
    let (_, status) = on_host(APT_HOST, "dpkg -s pbhello-deb");
    assert!(!status.contains("install ok installed"), "{status}");
    assert_eq!(play(&p, "absent.rhai", absent, &[]).total("changed"), 0);
    apt_host_reset();
}

/// Makes the host's apt lists look as if `apt-get update` had just run (as on a machine that was
/// just provisioned, or one whose lists the lab's own `apt-get update` refreshed).
fn apt_lists_fresh() {
    lab_exec(
        APT_HOST,
        "mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp",
    );
}

#[test]
fn apt_reads_a_source_added_above_however_fresh_the_lists() {
    let Some(p) = project("apt_reads_a_source_added_above_however_fresh_the_lists") else {
        return;
    };
    let shared = shared_dir();
    deb_repo(shared.path(), "1.0");
    apt_host_reset();
    apt_lists_fresh();
    let hello = opt_file(APT_HOST, "pbhello-deb/hello.txt");
    // What playbooks/lib/node.rhai does: the source, then the package with a cache that is
    // "valid" for an hour.
    let play_text = format!(
        "on(\"h\", [\n{},\n    apt(#{{ name: \"pbhello-deb\", update_cache: true, \
         cache_valid_time: 3600 }}),\n]);",
        apt_source_task(shared.path())
    );

    let check = play(&p, "fresh.rhai", &play_text, &["--check"]);
    check.assert_code(0);
    let l = lines(&check);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[1].starts_with("h apt changed install: pbhello-deb")
            && l[1].contains("assumed available once a change above adds their source"),
        "{l:?}"
    );
    assert!(!hello.exists());

    let real = play(&p, "fresh.rhai", &play_text, &[]);
    real.assert_code(0);
    let l = lines(&real);
    assert_eq!(
        l[1],
        "h apt changed update cache (/etc/apt/sources.list.d/pbtest.list is newer than the cache); \
         install: pbhello-deb",
        "{l:?}"
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello 1.0\n");
    assert_eq!(
        check.changed(),
        real.changed(),
        "check mode predicted the real run"
    );

    // Converged: the update marked the cache newer than the source, so it does not run again.
    let stamp = || {
        on_host(
            APT_HOST,
            "stat -c %y /var/lib/apt/periodic/update-success-stamp",
        )
    };
    let updated = stamp();
    let again = play(&p, "fresh.rhai", &play_text, &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    assert_eq!(stamp(), updated, "no second update");
    let check = play(&p, "fresh.rhai", &play_text, &["--check"]);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
    apt_host_reset();
}
