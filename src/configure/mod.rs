//! Stage 3, configure: make podman able to run containers on this host.
//!
//! The flow, each step a function below: lock the files podstack may write
//! (a sidecar lock per file), read them and every file podman merges with
//! them (refusing, untouched, any file podman could not read), plan, refuse
//! a driver switch over storage that holds data unless a reset is asked for,
//! prove the plan with the canary on candidate copies (on a throwaway store
//! when the driver changes or nothing may change), and only when the canary
//! passed: wipe the store if asked, write every changed file all or nothing,
//! and prove the written files once more (putting the old ones back if that
//! fails).

pub mod edit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use toml_edit::DocumentMut;

use crate::canary::{self, Candidate, Diagnosis, Rlimit};
use crate::conf::{self, Kind, Loaded};
use crate::detect::Facts;
use crate::env::Env;
use crate::fsx;
use crate::layout::Layout;
use crate::plan::{self, DriverChoice, Network, Plan, Setting};
use crate::proc::Cmd;
use crate::scratch;
use edit::Changed;

/// How to configure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Plan and prove, change nothing anywhere.
    pub dry_run: bool,
    /// The storage driver wanted.
    pub driver: DriverChoice,
    /// Wipe storage that holds another driver's data.
    pub reset_storage: bool,
    /// Run the canary (off: settings from the host's facts only).
    pub canary: bool,
    /// Deadline of one canary run.
    pub timeout: Duration,
    /// How long to wait for another podstack writing the same files.
    pub lock_timeout: Duration,
}

/// What happened to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Every byte already right.
    Unchanged,
    /// Rewritten.
    Changed,
    /// Made.
    Created,
    /// Would be rewritten (dry run, or the canary failed).
    WouldChange,
    /// Would be made (dry run, or the canary failed).
    WouldCreate,
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileStatus::Unchanged => "unchanged",
            FileStatus::Changed => "changed",
            FileStatus::Created => "created",
            FileStatus::WouldChange => "would change",
            FileStatus::WouldCreate => "would create",
        })
    }
}

/// What became of the storage reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    /// None was needed or asked for.
    None,
    /// The store was wiped.
    Wiped,
    /// The store would be wiped (dry run, or the canary failed).
    WouldWipe,
}

/// What configure did (or would do).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nothing was changed anywhere.
    pub dry_run: bool,
    /// Rootless or rootful configuration.
    pub rootless: bool,
    /// The two files.
    pub files: Vec<FileReport>,
    /// The storage decision.
    pub storage: plan::StoragePlan,
    /// Every containers.conf setting podstack wants, with why.
    pub settings: Vec<Setting>,
    /// `host` or `default`.
    pub network: Network,
    /// The storage reset.
    pub storage_reset: Reset,
    /// The canary's verdict.
    pub canary: CanaryReport,
    /// Problems podstack saw but did not fix.
    pub warnings: Vec<String>,
}

/// One configuration file's fate.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// `storage.conf` or `containers.conf`.
    pub name: &'static str,
    /// Its path.
    pub path: PathBuf,
    /// What happened to it.
    pub status: FileStatus,
    /// The keys that change.
    pub changes: Vec<Changed>,
    /// The backup made of the previous version, if one was made now.
    pub backup: Option<PathBuf>,
}

/// The canary's part.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CanaryReport {
    /// Whether it ran at all.
    pub ran: bool,
    /// Whether containers run with the configuration as written (or planned).
    pub passed: bool,
    /// How many canary containers were started.
    pub runs: u32,
    /// Wall time of the last run, in milliseconds.
    pub last_ms: u64,
    /// The proof ran on a throwaway store (a driver change, or a dry run).
    pub throwaway_store: bool,
    /// Why it fails, when it does.
    pub diagnosis: Option<Diagnosis>,
}

impl Report {
    /// Whether anything changed (or would).
    pub fn changed(&self) -> bool {
        self.files.iter().any(|f| !f.changes.is_empty()) || self.storage_reset != Reset::None
    }

    /// Whether the files were left as they were because the canary failed.
    pub fn held_back(&self) -> bool {
        !self.dry_run && self.canary.ran && !self.canary.passed
    }
}

/// The most canary runs one configure makes (each finding needs one).
const MAX_RUNS: u32 = 16;

/// Runs configure.
pub async fn run(facts: &Facts, env: &Env, opts: &Options) -> Result<Report> {
    let layout = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podman's configuration lives")?;
    let podman = facts.podman.as_ref().map(|b| b.path.clone()).context(
        "podman is not installed: install it with `apt-get install podman runc uidmap slirp4netns` (or `install.sh --with-podman`), then run podstack configure again",
    )?;
    let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let scratch = scratch::Base::pick(env, &mountinfo, &layout.state_dir)?;
    for gone in scratch.sweep() {
        crate::log::info(|| {
            format!(
                "removed {}, left by a podstack that was killed",
                gone.display()
            )
        });
    }
    let _locks = if opts.dry_run {
        Vec::new()
    } else {
        let locks = lock_files(layout, opts.lock_timeout).await?;
        for f in [&layout.storage_conf, &layout.containers_conf] {
            for did in fsx::recover(f)? {
                crate::log::say(&did);
            }
        }
        locks
    };

    let mut plan = plan::plan(facts, opts.driver);
    let files = Files::read(env, layout, plan.storage.needs_roots)?;
    let stale = stale_storage(facts, &files, &plan, opts)?;
    let reset_wanted = !stale.is_empty() && opts.reset_storage;
    // A driver change (or a dry run) is proven on a throwaway store: the real
    // one is neither touched before the proof nor at all on a dry run.
    let configured = conf::storage_settings(&files.base_storage).driver;
    let throwaway = opts.dry_run
        || reset_wanted
        || plan
            .storage
            .driver
            .as_ref()
            .is_some_and(|d| Some(d) != configured.as_ref());

    let mut canary = CanaryReport::default();
    if opts.canary {
        canary = prove(facts, &files, &mut plan, &podman, opts, &scratch, throwaway).await?;
    }
    let mut warnings = files.overridden(&plan);
    warnings.extend(
        canary
            .passed
            .then(|| canary::slow_warning(canary.last_ms))
            .flatten(),
    );
    if !stale.is_empty() && !opts.reset_storage {
        warnings.push(plan::mixed_storage_warning(&graphroot(facts), &stale));
    }
    let e = files.edits(&plan)?;
    let held = !opts.dry_run && opts.canary && !canary.passed;
    let hold = opts.dry_run || held;
    let mut reports = vec![
        file_report(
            "storage.conf",
            &files.storage,
            &e.storage_text,
            e.storage_changes.clone(),
            hold,
        ),
        file_report(
            "containers.conf",
            &files.containers,
            &e.containers_text,
            e.containers_changes.clone(),
            hold,
        ),
    ];
    let mut storage_reset = if reset_wanted {
        Reset::WouldWipe
    } else {
        Reset::None
    };
    if !hold {
        if reset_wanted {
            let runroot = conf::storage_settings(&files.base_storage)
                .runroot
                .unwrap_or_else(|| layout.default_runroot.clone());
            reset_storage(&podman, &stale.join(", "), facts, &runroot).await?;
            storage_reset = Reset::Wiped;
        }
        let new: Vec<fsx::NewFile> = [
            (&files.storage, &e.storage_text, &reports[0]),
            (&files.containers, &e.containers_text, &reports[1]),
        ]
        .into_iter()
        .filter(|(_, _, r)| r.status != FileStatus::Unchanged)
        .map(|(f, text, _)| fsx::NewFile {
            path: f.path.clone(),
            bytes: text.as_bytes().to_vec(),
            new_mode: 0o644,
        })
        .collect();
        let backups = fsx::commit(&new).with_context(|| {
            "cannot write podman's configuration: run podstack as the user whose podman this is, or point CONTAINERS_STORAGE_CONF / CONTAINERS_CONF at files in a folder you may write"
        })?;
        let mut backups = backups.into_iter();
        for r in reports
            .iter_mut()
            .filter(|r| r.status != FileStatus::Unchanged)
        {
            r.backup = backups.next().flatten();
        }
        if opts.canary && (!new.is_empty() || storage_reset == Reset::Wiped) {
            verify(
                &podman,
                &files,
                &mut reports,
                opts,
                &scratch,
                facts,
                &mut canary,
            )
            .await?;
        }
        if opts.canary && canary.passed {
            record_proof(env, layout, &podman)?;
        }
    }
    Ok(Report {
        dry_run: opts.dry_run,
        rootless: layout.rootless,
        files: reports,
        network: plan.network(),
        storage: plan.storage.clone(),
        settings: plan.settings,
        storage_reset,
        warnings,
        canary,
    })
}

/// What a passing canary ran with: podman's identity (path, size, mtime:
/// no podman call) and every configuration file podman reads, as a hash.
/// While it is unchanged, podman needs no new proof.
pub fn proof_key(env: &Env, layout: &Layout, podman: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut feed = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    feed(b"podstack proof 1");
    feed(&nix::unistd::geteuid().as_raw().to_le_bytes());
    feed(podman.as_os_str().as_encoded_bytes());
    if let Ok(m) = fs_err::metadata(podman) {
        feed(&m.len().to_le_bytes());
        feed(&m.mtime().to_le_bytes());
        feed(&m.mtime_nsec().to_le_bytes());
    }
    let files = std::iter::once(layout.storage_conf.clone())
        .chain(layout.storage_fallbacks.iter().cloned())
        .chain(crate::layout::containers_conf_chain(env, layout))
        .chain(crate::layout::override_file(env));
    for f in files {
        feed(f.as_os_str().as_encoded_bytes());
        match fs_err::read(&f) {
            Ok(b) => feed(&b),
            Err(_) => feed(b"(missing)"),
        }
    }
    crate::stack::resolve::hex(&h.finalize())
}

fn record_proof(env: &Env, layout: &Layout, podman: &Path) -> Result<()> {
    let key = proof_key(env, layout, podman);
    fsx::write_atomic(&layout.state_dir.join("proof"), key.as_bytes(), 0o600)
}

/// Makes sure podman can run containers: nothing when the recorded proof
/// still holds (no podman call), else a full `configure`. A configuration
/// that cannot be made to work is a negative answer ([`crate::exit::No`]).
pub async fn ensure(facts: &Facts, env: &Env, lock_timeout: Duration) -> Result<()> {
    let layout = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podman's configuration lives")?;
    let podman = facts.podman.as_ref().map(|b| b.path.clone()).context(
        "podman is not installed: install it with `apt-get install podman runc uidmap slirp4netns` (or `install.sh --with-podman`)",
    )?;
    let proof = fs_err::read_to_string(layout.state_dir.join("proof")).unwrap_or_default();
    if proof == proof_key(env, layout, &podman) {
        return Ok(());
    }
    crate::log::say("checking that podman can run containers here (podstack configure)");
    let opts = Options {
        dry_run: false,
        driver: DriverChoice::Auto,
        reset_storage: false,
        canary: true,
        timeout: Duration::from_secs(60),
        lock_timeout,
    };
    let r = run(facts, env, &opts).await?;
    if !r.canary.passed {
        let d = r.canary.diagnosis.as_ref();
        return Err(crate::exit::No(format!(
            "containers cannot run here: {}; cause: {}; fix: {}",
            d.map_or("the canary failed", |d| d.error.as_str()),
            d.map_or("unknown", |d| d.cause.as_str()),
            d.map_or("run podstack doctor", |d| d.fix.as_str()),
        ))
        .into());
    }
    for f in r.files.iter().filter(|f| !f.changes.is_empty()) {
        crate::log::say(&format!("{} {}", f.status, f.path.display()));
    }
    Ok(())
}

/// Takes the lock of every file configure may write, in path order (two
/// podstacks never wait on each other crosswise).
async fn lock_files(layout: &Layout, deadline: Duration) -> Result<Vec<fsx::Lock>> {
    let mut targets = vec![layout.storage_conf.clone(), layout.containers_conf.clone()];
    targets.sort();
    targets.dedup();
    let mut locks = Vec::new();
    for t in targets {
        let what = format!("configuring {}", t.display());
        let fallback = layout.state_dir.join("locks");
        locks.push(fsx::Lock::for_file(&t, &fallback, deadline, &what).await?);
    }
    Ok(locks)
}

fn file_report(
    name: &'static str,
    f: &ConfFile,
    new: &str,
    changes: Vec<Changed>,
    hold: bool,
) -> FileReport {
    let exists = f.exists;
    let changed = f.loaded.text != new && (!changes.is_empty() || !exists);
    let status = match (changed, exists, hold) {
        (false, _, _) => FileStatus::Unchanged,
        (true, true, false) => FileStatus::Changed,
        (true, false, false) => FileStatus::Created,
        (true, true, true) => FileStatus::WouldChange,
        (true, false, true) => FileStatus::WouldCreate,
    };
    FileReport {
        name,
        path: f.path.clone(),
        status,
        changes: if changed { changes } else { Vec::new() },
        backup: None,
    }
}

/// Runs the canary on the files as written; when it fails, puts every
/// file back as it was (removing the ones podstack created), marks them
/// `would ...` in the report, and says so.
async fn verify(
    podman: &Path,
    files: &Files,
    reports: &mut [FileReport],
    opts: &Options,
    scratch: &scratch::Base,
    facts: &Facts,
    canary: &mut CanaryReport,
) -> Result<()> {
    let out = canary::run(podman, &Candidate::default(), opts.timeout, scratch).await?;
    canary.runs += 1;
    canary.last_ms = out.millis();
    canary.passed = canary::passed(&out);
    if canary.passed {
        return Ok(());
    }
    let mut d = canary::diagnose(&out, facts);
    let sources = [&files.storage, &files.containers];
    let mut old = Vec::new();
    for (f, r) in sources.iter().zip(reports.iter_mut()) {
        match r.status {
            FileStatus::Changed => {
                old.push(fsx::NewFile {
                    path: f.path.clone(),
                    bytes: f.loaded.text.as_bytes().to_vec(),
                    new_mode: 0o644,
                });
                r.status = FileStatus::WouldChange;
            }
            FileStatus::Created => {
                fs_err::remove_file(&f.path)?;
                r.status = FileStatus::WouldCreate;
            }
            _ => {}
        }
        r.backup = None;
    }
    fsx::commit(&old)?;
    d.fix = format!(
        "{} (the files passed on temporary copies but failed once written, so podstack put them back as they were)",
        d.fix
    );
    canary.diagnosis = Some(d);
    Ok(())
}

/// Other drivers' data in the graphroot (see [`plan::other_drivers`]). A switch
/// onto such storage is refused unless a reset is asked for.
fn stale_storage(facts: &Facts, files: &Files, plan: &Plan, opts: &Options) -> Result<Vec<String>> {
    let configured = conf::storage_settings(&files.base_storage).driver;
    let target = plan.storage.driver.clone().or(configured.clone());
    let others = plan::other_drivers(target.as_deref(), &facts.storage.drivers_on_disk);
    let held = others.join(", ");
    if let Some(target) = &target
        && !others.is_empty()
        && !opts.reset_storage
        && plan.storage.driver.is_some()
        && configured.as_ref() != Some(target)
    {
        bail!(
            "podman's storage at {} holds {held} data, so switching it to {target} would break podman (\"database configuration mismatch\", or images hidden and 20 s container starts); nothing was changed. Either wipe it with `podstack configure --reset-storage` (deletes every container, image and volume in it) or keep it with `--storage-driver {held}`",
            graphroot(facts).display()
        );
    }
    Ok(others)
}

/// Runs the canary against candidate files until it passes or no known fix is
/// left, adding each proven fix to `plan`.
async fn prove(
    facts: &Facts,
    files: &Files,
    plan: &mut Plan,
    podman: &Path,
    opts: &Options,
    scratch: &scratch::Base,
    throwaway: bool,
) -> Result<CanaryReport> {
    let mut report = CanaryReport {
        ran: true,
        throwaway_store: throwaway,
        ..CanaryReport::default()
    };
    let dir = scratch.make("candidate")?;
    let store = throwaway.then(|| {
        let driver = plan
            .storage
            .driver
            .clone()
            .or_else(|| conf::storage_settings(&files.base_storage).driver)
            .or_else(|| match facts.storage.drivers_on_disk.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            });
        (
            dir.path().join("graphroot"),
            dir.path().join("runroot"),
            driver,
        )
    });
    let current_ulimits = conf::get_list(
        &files.merged(&files.containers.loaded.doc),
        "containers",
        "default_ulimits",
    )
    .unwrap_or_default();
    let mut tries = UlimitTries::new(facts);
    loop {
        let candidate = files
            .edits(plan)?
            .candidate(files, dir.path(), store.as_ref())?;
        let out = canary::run(podman, &candidate, opts.timeout, scratch).await?;
        report.runs += 1;
        report.last_ms = out.millis();
        if canary::passed(&out) {
            report.passed = true;
            report.diagnosis = None;
            return Ok(report);
        }
        let mut diagnosis = canary::diagnose(&out, facts);
        // podman names the candidate copy; the user needs their own file.
        for (copy, real) in [
            (&candidate.storage_conf, &files.storage.path),
            (&candidate.containers_conf, &files.containers.path),
        ] {
            if let Some(copy) = copy {
                let shown = format!("{} (as podstack would write it)", real.display());
                diagnosis.error = diagnosis.error.replace(&copy.display().to_string(), &shown);
            }
        }
        let fix = canary::fix_for(&diagnosis, facts, plan, &current_ulimits, &mut |r| {
            tries.next(r)
        });
        report.diagnosis = Some(diagnosis);
        match fix {
            Some(fix) if report.runs < MAX_RUNS && plan.get(fix.table, fix.key) != Some(&fix) => {
                plan.apply(fix);
            }
            _ => return Ok(report),
        }
    }
}

/// A configuration file podstack may write: as read, or empty when missing.
struct ConfFile {
    path: PathBuf,
    exists: bool,
    loaded: Loaded,
}

impl ConfFile {
    fn read(path: &Path, kind: Kind) -> Result<ConfFile> {
        let loaded = conf::load(path, kind)?;
        Ok(ConfFile {
            path: path.to_path_buf(),
            exists: loaded.is_some(),
            loaded: loaded.unwrap_or_else(|| Loaded::empty(path, kind)),
        })
    }
}

/// podman's files as read, and what podstack needs to compute their new text.
struct Files {
    storage: ConfFile,
    containers: ConfFile,
    /// containers.conf files podman reads before the one podstack edits.
    before: Vec<Loaded>,
    /// ... and after it (drop-ins): their keys win.
    after: Vec<(PathBuf, Loaded)>,
    /// `CONTAINERS_CONF_OVERRIDE`, read last by podman 4.5 and later.
    override_conf: Option<(PathBuf, Loaded)>,
    /// storage.conf as it is, or the seed to start from when it does not exist.
    base_storage: DocumentMut,
    /// runroot and graphroot to add when a rootful file lacks them.
    roots: Option<(PathBuf, PathBuf)>,
    /// The environment names storage.conf, so it must exist.
    storage_required: bool,
}

/// The new documents and texts for one plan, and what changed in each.
struct Edits {
    storage: DocumentMut,
    storage_text: String,
    storage_changes: Vec<Changed>,
    containers: DocumentMut,
    containers_text: String,
    containers_changes: Vec<Changed>,
}

impl Files {
    fn read(env: &Env, layout: &Layout, needs_roots: bool) -> Result<Files> {
        let storage = ConfFile::read(&layout.storage_conf, Kind::Storage)?;
        let containers = ConfFile::read(&layout.containers_conf, Kind::Containers)?;
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut seen_own = false;
        for path in crate::layout::containers_conf_chain(env, layout) {
            if path == layout.containers_conf {
                seen_own = true;
                continue;
            }
            let Some(l) = conf::load(&path, Kind::Containers)? else {
                continue;
            };
            if seen_own {
                after.push((path, l));
            } else {
                before.push(l);
            }
        }
        let override_conf = match crate::layout::override_file(env) {
            Some(p) => conf::load(&p, Kind::Containers)?.map(|l| (p, l)),
            None => None,
        };
        let base_storage =
            storage_seed(layout, &storage)?.unwrap_or_else(|| storage.loaded.doc.clone());
        Ok(Files {
            storage,
            containers,
            before,
            after,
            override_conf,
            base_storage,
            roots: needs_roots.then(|| {
                (
                    layout.default_runroot.clone(),
                    layout.default_graphroot.clone(),
                )
            }),
            storage_required: layout.storage_conf_required,
        })
    }

    /// The new documents and texts for `plan` (pure).
    fn edits(&self, plan: &Plan) -> Result<Edits> {
        let mut storage = self.base_storage.clone();
        let mut storage_changes = edit::storage(&mut storage, &plan.storage, self.roots.clone())?;
        let mut storage_text = self.storage.loaded.render(&storage)?;
        if !self.storage.exists && plan.storage.driver.is_none() && !self.storage_required {
            // Nothing of ours to say: do not create a file just to restate defaults.
            storage_changes.clear();
            storage_text = String::new();
        } else if !self.storage.exists && storage_changes.is_empty() {
            storage_changes.push(Changed {
                key: "storage.conf".into(),
                value: "created".into(),
                was: None,
                reason: "CONTAINERS_STORAGE_CONF names it, and podman refuses to start without it"
                    .into(),
            });
        }
        let mut containers = self.containers.loaded.doc.clone();
        let containers_changes = edit::containers(&mut containers, &plan.settings)?;
        let mut containers_text = self.containers.loaded.render(&containers)?;
        if !self.containers.exists {
            containers_text = if containers_changes.is_empty() {
                String::new()
            } else {
                format!("{}{containers_text}", edit::CONTAINERS_HEADER)
            };
        }
        Ok(Edits {
            storage,
            storage_text,
            storage_changes,
            containers,
            containers_text,
            containers_changes,
        })
    }

    /// The configuration podman would see with `own` in the place of the file
    /// podstack edits.
    fn merged(&self, own: &DocumentMut) -> DocumentMut {
        let mut out = DocumentMut::new();
        for doc in self
            .before
            .iter()
            .map(|l| &l.doc)
            .chain(std::iter::once(own))
            .chain(self.after.iter().map(|(_, l)| &l.doc))
        {
            conf::merge(&mut out, doc);
        }
        out
    }

    /// Warnings for planned settings that a file podman reads later sets
    /// otherwise: there podstack's fix cannot take effect.
    fn overridden(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        for s in &plan.settings {
            let later = self
                .after
                .iter()
                .map(|(p, l)| (p, l, "podman reads it after"))
                .chain(self.override_conf.iter().map(|(p, l)| {
                    (
                        p,
                        l,
                        "CONTAINERS_CONF_OVERRIDE names it: podman 4.5 and later read it after",
                    )
                }));
            for (path, l, how) in later {
                let Some(item) = l.doc.get(s.table).and_then(|t| t.get(s.key)) else {
                    continue;
                };
                let same = match (&s.value, item.as_str()) {
                    (conf::ConfValue::Str(want), Some(v)) => want == v,
                    _ => false,
                };
                if !same {
                    let line =
                        conf::line_of(l, s.table, s.key).map_or(String::new(), |n| format!(":{n}"));
                    out.push(format!(
                        "{}{line} sets [{}] {} = {}, and {how} {}: podstack's value ({}) cannot take effect; remove that line",
                        path.display(),
                        s.table,
                        s.key,
                        item.as_value().map_or("a table".into(), |v| v.to_string().trim().to_string()),
                        self.containers.path.display(),
                        s.value,
                    ));
                }
            }
        }
        out
    }
}

impl Edits {
    /// Writes the files the canary should use into `dir`; a throwaway store
    /// (graphroot, runroot, driver) replaces the real one when given.
    fn candidate(
        &self,
        files: &Files,
        dir: &Path,
        store: Option<&(PathBuf, PathBuf, Option<String>)>,
    ) -> Result<Candidate> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            fs_err::write(&path, text)?;
            Ok(path)
        };
        let storage_conf = match store {
            Some((graph, run, driver)) => {
                let mut doc = self.storage.clone();
                edit::throwaway_roots(&mut doc, graph, run, driver.as_deref())?;
                Some(write("storage.conf", &doc.to_string())?)
            }
            None if !self.storage_changes.is_empty() => {
                Some(write("storage.conf", &self.storage_text)?)
            }
            None => None,
        };
        let containers_conf = if let Some((graph, _, _)) = store {
            // A throwaway store gets a throwaway tmp_dir too: podman keeps its
            // `alive` marker, events and exit files there.
            let mut merged = files.merged(&self.containers);
            let tmp = graph.with_file_name("podman-tmp");
            conf::set(
                &mut merged,
                "engine",
                "tmp_dir",
                &conf::ConfValue::Str(tmp.display().to_string()),
                "",
            )
            .map_err(anyhow::Error::msg)?;
            let text = merged.to_string();
            conf::parse(&dir.join("containers.conf"), &text, Kind::Containers)?;
            Some(write("containers.conf", &text)?)
        } else if self.containers_changes.is_empty() {
            None
        } else if files.before.is_empty() && files.after.is_empty() {
            // podman reads this one file alone: the canary gets exactly the
            // bytes that will be written.
            Some(write("containers.conf", &self.containers_text)?)
        } else {
            let merged = files.merged(&self.containers).to_string();
            // The merged copy must be a file podman can read, like any other.
            conf::parse(&dir.join("containers.conf"), &merged, Kind::Containers)?;
            Some(write("containers.conf", &merged)?)
        };
        Ok(Candidate {
            storage_conf,
            containers_conf,
        })
    }
}

fn graphroot(facts: &Facts) -> PathBuf {
    facts.storage.graphroot.clone().unwrap_or_default()
}

/// For a storage.conf that does not exist yet: a rootful one starts from the
/// vendor file (it documents every key and sets the roots), a rootless one
/// from a short header keeping the system file's driver in view.
fn storage_seed(layout: &Layout, current: &ConfFile) -> Result<Option<DocumentMut>> {
    if current.exists {
        return Ok(None);
    }
    let header = || -> Result<DocumentMut> {
        Ok(conf::parse(&current.path, edit::STORAGE_HEADER, Kind::Storage)?.doc)
    };
    for path in &layout.storage_fallbacks {
        if let Some(l) = conf::load(path, Kind::Storage)? {
            if layout.rootless {
                let mut seed = header()?;
                if let Some(driver) = conf::storage_settings(&l.doc).driver {
                    conf::set(
                        &mut seed,
                        "storage",
                        "driver",
                        &conf::ConfValue::Str(driver),
                        "",
                    )
                    .map_err(anyhow::Error::msg)?;
                }
                return Ok(Some(seed));
            }
            return Ok(Some(l.doc));
        }
    }
    Ok(Some(header()?))
}

/// Wipes podman's storage that holds `held` data: `podman system reset` with
/// the configuration that created it, else (when that configuration is gone
/// and podman refuses) the graphroot and runroot themselves.
async fn reset_storage(podman: &Path, held: &str, facts: &Facts, runroot: &Path) -> Result<()> {
    let graphroot = graphroot(facts);
    crate::log::say(&format!(
        "wiping podman's {held} storage at {} (--reset-storage)",
        graphroot.display()
    ));
    let out = Cmd::new(podman)
        .args(["system", "reset", "--force"])
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    if out.success() {
        return Ok(());
    }
    crate::log::info(|| {
        format!(
            "`{}` failed ({}), removing the folders instead",
            out.display,
            out.tail(1)
        )
    });
    for dir in [graphroot.as_path(), runroot] {
        let looks_like_storage = dir.join("libpod").exists()
            || fs_err::read_dir(dir).is_ok_and(|mut rd| {
                rd.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("-layers")))
            });
        if dir.components().count() < 3 || !looks_like_storage {
            bail!(
                "podman could not reset its storage ({}) and {} does not look like podman storage, so podstack will not delete it; remove it yourself",
                out.tail(1),
                dir.display()
            );
        }
        fs_err::remove_dir_all(dir)?;
    }
    Ok(())
}

/// Walks the candidate values for each limit podman could not set.
struct UlimitTries {
    nofile: std::vec::IntoIter<u64>,
    nproc: std::vec::IntoIter<u64>,
}

impl UlimitTries {
    fn new(facts: &Facts) -> Self {
        let c = |r, hard| canary::ulimit_candidates(r, hard, facts.pid_max).into_iter();
        Self {
            nofile: c(Rlimit::Nofile, facts.rlimits.nofile.hard),
            nproc: c(Rlimit::Nproc, facts.rlimits.nproc.hard),
        }
    }

    fn next(&mut self, r: Rlimit) -> Option<u64> {
        match r {
            Rlimit::Nofile => self.nofile.next(),
            Rlimit::Nproc => self.nproc.next(),
        }
    }
}
