//! Stage 3, configure: make podman able to run containers on this host.
//!
//! Reads storage.conf and containers.conf (refusing, untouched, any file that
//! does not parse), plans the settings the host needs, proves each fix with
//! the canary before writing it, then writes only what changes: atomically,
//! with a one-time `.bak`, under a lock so concurrent runs do not interleave.
//! A driver change over storage that holds data is refused unless
//! `--reset-storage` says to wipe it.

pub mod edit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use toml_edit::DocumentMut;

use crate::canary::{self, Candidate, Diagnosis, Rlimit};
use crate::conf;
use crate::detect::Facts;
use crate::env::Env;
use crate::fsx;
use crate::layout::Layout;
use crate::plan::{self, DriverChoice, Plan, Setting};
use crate::proc::{Cmd, Output};

/// How to configure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Plan and prove, write nothing.
    pub dry_run: bool,
    /// The storage driver wanted.
    pub driver: DriverChoice,
    /// Wipe storage that holds another driver's data.
    pub reset_storage: bool,
    /// Run the canary (off: settings from the host's facts only).
    pub canary: bool,
    /// Deadline of one canary run.
    pub timeout: Duration,
}

/// What configure did (or would do, on a dry run).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nothing was written.
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
    pub network: &'static str,
    /// Whether storage was wiped (`--reset-storage`).
    pub storage_reset: bool,
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
    /// `unchanged`, `changed`, `created`, `would change`, `would create`.
    pub status: &'static str,
    /// The keys that change, as `[table] key = value`.
    pub changes: Vec<String>,
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
    /// Why it fails, when it does.
    pub diagnosis: Option<Diagnosis>,
}

impl Report {
    /// Whether anything changed (or would).
    pub fn changed(&self) -> bool {
        self.files.iter().any(|f| !f.changes.is_empty()) || self.storage_reset
    }
}

/// The most canary runs one configure makes (each finding needs one).
const MAX_RUNS: u32 = 16;

/// Runs configure.
pub fn run(facts: &Facts, env: &Env, opts: &Options) -> Result<Report> {
    let layout = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podman's configuration lives")?;
    let podman = facts.podman.as_ref().map(|b| b.path.clone()).context(
        "podman is not installed: install it with `apt-get install podman runc uidmap slirp4netns` (or `install.sh --with-podman`), then run podstack configure again",
    )?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(fsx::Lock::acquire(
            &layout.state_dir.join("configure.lock"),
            Duration::from_secs(120),
            "configuring podman",
        )?)
    };

    let mut plan = plan::plan(facts, opts.driver);
    let files = Files::read(env, layout, plan.storage.needs_roots)?;
    let stale = stale_storage(facts, &files, &plan, opts)?;

    // The wipe the user asked for comes first, so the canary proves the new driver
    // on empty storage.
    let storage_reset = !stale.is_empty() && opts.reset_storage && !opts.dry_run;
    if storage_reset {
        let runroot = conf::storage_settings(&files.base_storage)
            .runroot
            .unwrap_or_else(|| layout.default_runroot.clone());
        reset_storage(&podman, &stale.join(", "), facts, &runroot)?;
    }

    let mut canary_report = if opts.canary {
        prove(facts, &files, &mut plan, &podman, opts.timeout)?
    } else {
        CanaryReport::default()
    };

    let Files {
        storage,
        containers,
        ..
    } = &files;
    let e = files.edits(&plan);
    let storage_report =
        storage.finish("storage.conf", &e.storage, e.storage_changes, opts.dry_run)?;
    let containers_report = containers.finish(
        "containers.conf",
        &e.containers,
        e.containers_changes,
        opts.dry_run,
    )?;

    // Verify what was written, unless the proving run already ran on it.
    let wrote = !opts.dry_run
        && (!storage_report.changes.is_empty()
            || !containers_report.changes.is_empty()
            || storage_reset);
    if opts.canary && wrote && canary_report.passed {
        let out = canary::run(&podman, None, opts.timeout)?;
        canary_report.runs += 1;
        canary_report.last_ms = millis(&out);
        canary_report.passed = canary::passed(&out);
        canary_report.diagnosis = (!canary_report.passed).then(|| canary::diagnose(&out, facts));
    }

    Ok(Report {
        dry_run: opts.dry_run,
        rootless: layout.rootless,
        files: vec![storage_report, containers_report],
        network: plan.network(),
        storage: plan.storage.clone(),
        settings: plan.settings,
        storage_reset: storage_reset || (opts.dry_run && opts.reset_storage && !stale.is_empty()),
        warnings: if stale.is_empty() || opts.reset_storage {
            Vec::new()
        } else {
            vec![plan::mixed_storage_warning(&graphroot(facts), &stale)]
        },
        canary: canary_report,
    })
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
fn prove(
    facts: &Facts,
    files: &Files,
    plan: &mut Plan,
    podman: &Path,
    timeout: Duration,
) -> Result<CanaryReport> {
    let mut report = CanaryReport {
        ran: true,
        ..CanaryReport::default()
    };
    let scratch = tempfile::Builder::new()
        .prefix("podstack-candidate-")
        .tempdir()
        .context("cannot create a folder for candidate configuration files")?;
    let current_ulimits = conf::get_list(
        &files.chain.merged(&files.containers.doc),
        "containers",
        "default_ulimits",
    )
    .unwrap_or_default();
    let mut tries = UlimitTries::new(facts);
    loop {
        let candidate = files.edits(plan).candidate(&files.chain, scratch.path())?;
        let out = canary::run(podman, candidate.as_ref(), timeout)?;
        report.runs += 1;
        report.last_ms = millis(&out);
        if canary::passed(&out) {
            report.passed = true;
            report.diagnosis = None;
            return Ok(report);
        }
        let diagnosis = canary::diagnose(&out, facts);
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

/// podman's files as read, and what podstack needs to compute their new text.
struct Files {
    storage: ConfFile,
    containers: ConfFile,
    chain: Chain,
    /// storage.conf as it is, or the seed to start from when it does not exist.
    base_storage: DocumentMut,
    /// runroot and graphroot to add when a rootful file lacks them.
    roots: Option<(PathBuf, PathBuf)>,
    /// The environment names storage.conf, so it must exist.
    storage_required: bool,
}

impl Files {
    fn read(env: &Env, layout: &Layout, needs_roots: bool) -> Result<Files> {
        let storage = ConfFile::read(&layout.storage_conf)?;
        let containers = ConfFile::read(&layout.containers_conf)?;
        let chain = Chain::read(env, layout)?;
        let base_storage = storage_seed(layout, &storage)?.unwrap_or_else(|| storage.doc.clone());
        Ok(Files {
            storage,
            containers,
            chain,
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

    /// The new documents for `plan` (pure).
    fn edits(&self, plan: &Plan) -> Edits {
        let mut storage = self.base_storage.clone();
        let mut storage_changes = edit::storage(&mut storage, &plan.storage, self.roots.clone());
        if self.storage.text.is_none() {
            if plan.storage.driver.is_none() && !self.storage_required {
                // Nothing of ours to say: do not create a file just to restate defaults.
                storage_changes.clear();
            } else if storage_changes.is_empty() {
                storage_changes.push("created: CONTAINERS_STORAGE_CONF names it".to_string());
            }
        }
        let mut containers = self.containers.doc.clone();
        let containers_changes = edit::containers(&mut containers, &plan.settings);
        Edits {
            storage,
            storage_changes,
            containers,
            containers_changes,
        }
    }
}

/// The new documents and what changed in each.
struct Edits {
    storage: DocumentMut,
    storage_changes: Vec<String>,
    containers: DocumentMut,
    containers_changes: Vec<String>,
}

impl Edits {
    /// Writes the changed files into `dir` for the canary; `None` when nothing changes.
    fn candidate(&self, chain: &Chain, dir: &Path) -> Result<Option<Candidate>> {
        if self.storage_changes.is_empty() && self.containers_changes.is_empty() {
            return Ok(None);
        }
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            fs_err::write(&path, text)?;
            Ok(path)
        };
        Ok(Some(Candidate {
            storage_conf: (!self.storage_changes.is_empty())
                .then(|| write("storage.conf", self.storage.to_string()))
                .transpose()?,
            containers_conf: (!self.containers_changes.is_empty())
                .then(|| {
                    write(
                        "containers.conf",
                        chain.merged(&self.containers).to_string(),
                    )
                })
                .transpose()?,
        }))
    }
}

/// podman's containers.conf chain around the file podstack edits.
struct Chain {
    before: Vec<DocumentMut>,
    after: Vec<DocumentMut>,
}

impl Chain {
    fn read(env: &Env, layout: &Layout) -> Result<Chain> {
        let mut chain = Chain {
            before: Vec::new(),
            after: Vec::new(),
        };
        let mut seen_own = false;
        for path in crate::layout::containers_conf_chain(env, layout) {
            if path == layout.containers_conf {
                seen_own = true;
                continue;
            }
            let Some((_, doc)) = conf::load(&path)? else {
                continue;
            };
            if seen_own {
                chain.after.push(doc)
            } else {
                chain.before.push(doc)
            }
        }
        Ok(chain)
    }

    /// The configuration podman would see with `own` in its place.
    fn merged(&self, own: &DocumentMut) -> DocumentMut {
        let mut out = DocumentMut::new();
        for doc in self
            .before
            .iter()
            .chain(std::iter::once(own))
            .chain(&self.after)
        {
            conf::merge(&mut out, doc);
        }
        out
    }
}

fn millis(out: &Output) -> u64 {
    u64::try_from(out.elapsed.as_millis()).unwrap_or(u64::MAX)
}

fn graphroot(facts: &Facts) -> PathBuf {
    facts.storage.graphroot.clone().unwrap_or_default()
}

/// A configuration file as read: its text (if it exists) and parsed document.
struct ConfFile {
    path: PathBuf,
    text: Option<String>,
    doc: DocumentMut,
}

impl ConfFile {
    fn read(path: &Path) -> Result<ConfFile> {
        let (text, doc) = match conf::load(path)? {
            Some((text, doc)) => (Some(text), doc),
            None => (None, DocumentMut::new()),
        };
        Ok(ConfFile {
            path: path.to_path_buf(),
            text,
            doc,
        })
    }

    /// Writes the new document if it differs (unless dry), and reports.
    fn finish(
        &self,
        name: &'static str,
        doc: &DocumentMut,
        changes: Vec<String>,
        dry: bool,
    ) -> Result<FileReport> {
        let mut new = doc.to_string();
        if self.text.is_none() && !changes.is_empty() && name == "containers.conf" {
            new = format!("{}{new}", edit::CONTAINERS_HEADER);
        }
        let changed = self.text.as_deref() != Some(new.as_str()) && !changes.is_empty();
        let status = match (changed, self.text.is_some(), dry) {
            (false, _, _) => "unchanged",
            (true, true, false) => "changed",
            (true, false, false) => "created",
            (true, true, true) => "would change",
            (true, false, true) => "would create",
        };
        let mut backup = None;
        if changed && !dry {
            let write = || -> Result<Option<PathBuf>> {
                let bak = fsx::backup_once(&self.path)?;
                fsx::write_atomic(&self.path, new.as_bytes(), 0o644)?;
                Ok(bak)
            };
            backup = write().with_context(|| {
                format!(
                    "cannot write {}: run podstack as the user whose podman this is, or point {} at a file in a folder you may write",
                    self.path.display(),
                    if name == "storage.conf" { "CONTAINERS_STORAGE_CONF" } else { "CONTAINERS_CONF" }
                )
            })?;
        }
        Ok(FileReport {
            name,
            path: self.path.clone(),
            status,
            changes: if changed { changes } else { Vec::new() },
            backup,
        })
    }
}

/// For a rootful storage.conf that does not exist yet, start from the vendor
/// file (it documents every key and sets the roots) rather than from nothing.
fn storage_seed(layout: &Layout, current: &ConfFile) -> Result<Option<DocumentMut>> {
    if current.text.is_some() {
        return Ok(None);
    }
    for path in &layout.storage_fallbacks {
        if let Some((_, doc)) = conf::load(path)? {
            if layout.rootless {
                // Rootless podman takes only the driver from system files; start from
                // an empty file but keep that driver in view.
                let mut seed = conf::parse(path, edit::STORAGE_HEADER)?;
                if let Some(driver) = conf::storage_settings(&doc).driver {
                    conf::set(
                        &mut seed,
                        "storage",
                        "driver",
                        &conf::ConfValue::Str(driver),
                        "",
                    );
                }
                return Ok(Some(seed));
            }
            return Ok(Some(doc));
        }
    }
    Ok(Some(conf::parse(&current.path, edit::STORAGE_HEADER)?))
}

/// Wipes podman's storage that holds `held` data: `podman system reset` with
/// the configuration that created it, else (when that configuration is gone
/// and podman refuses) the graphroot and runroot themselves.
fn reset_storage(podman: &Path, held: &str, facts: &Facts, runroot: &Path) -> Result<()> {
    let graphroot = graphroot(facts);
    eprintln!(
        "podstack: wiping podman's {held} storage at {} (--reset-storage)",
        graphroot.display()
    );
    let out = Cmd::new(podman)
        .args(["system", "reset", "--force"])
        .timeout(Duration::from_secs(300))
        .run()?;
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
