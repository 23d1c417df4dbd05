//! `podstack configure` against real podman: rootful, rootless, idempotent,
//! keeping the user's bytes, refusing bad input.

mod common;

use common::{Sandbox, in_ci};

const TINY: &str = "localhost/podstack-tiny";

/// The acceptance check: stock podman fails to run a container here, podstack
/// configure makes the same command succeed.
fn stock_fails_then_configure_makes_it_run(sb: &Sandbox) {
    sb.write_stock();
    sb.import_tiny_image(TINY);
    // No --network flag: the default network must work too (rootless here,
    // that is the host network configure sets).
    let cmd = ["run", "--rm", TINY, "true"];

    let stock = sb.podman(&cmd);
    if stock.ok() {
        // Only a host where podman works out of the box gets here; these machines do not.
        assert!(
            !in_ci(),
            "stock podman already runs containers on this CI machine:\n{}",
            stock.all()
        );
        eprintln!("NOTE: stock podman works on this host; checking configure keeps it working");
    } else {
        eprintln!("stock podman fails as expected:\n{}", stock.stderr);
    }

    let conf = sb.podstack(&["configure"]);
    assert!(conf.ok(), "configure failed:\n{}", conf.all());
    assert!(
        conf.stdout.contains("canary") && conf.stdout.contains("passed"),
        "{}",
        conf.stdout
    );

    let after = sb.podman(&cmd);
    assert!(
        after.ok(),
        "podman still fails after configure:\n{}\nconfigure said:\n{}",
        after.all(),
        conf.stdout
    );

    let doctor = sb.podstack(&["doctor"]);
    assert!(doctor.ok(), "doctor:\n{}", doctor.all());
    assert!(
        doctor
            .stdout
            .starts_with("podstack doctor: containers can run here"),
        "{}",
        doctor.stdout
    );
}

#[test]
fn rootful_stock_podman_fails_and_configure_fixes_it() {
    let Some(sb) = Sandbox::rootful() else { return };
    stock_fails_then_configure_makes_it_run(&sb);
    let conf = sb.read(&sb.containers_conf());
    // What these machines need rootful (PLATFORM.md): runc and capped rlimits.
    if in_ci() {
        assert!(conf.contains("runtime = \"runc\""), "{conf}");
        assert!(conf.contains("default_ulimits"), "{conf}");
    }
}

#[test]
fn rootless_stock_podman_fails_and_configure_fixes_it() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    stock_fails_then_configure_makes_it_run(&sb);
    let conf = sb.read(&sb.containers_conf());
    if in_ci() {
        // Rootless here: crun fails on hybrid cgroups, slirp4netns cannot open /dev/net/tun.
        assert!(conf.contains("runtime = \"runc\""), "{conf}");
        assert!(conf.contains("netns = \"host\""), "{conf}");
    }
    let detect = sb.podstack(&["detect", "--json"]);
    let facts: serde_json::Value = serde_json::from_str(&detect.stdout).expect("json");
    assert_eq!(facts["rootless"], true);
}

#[test]
fn second_run_changes_no_byte_and_says_so() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let first = sb.podstack(&["configure"]);
    assert!(first.ok(), "{}", first.all());
    let storage = sb.read(&sb.storage_conf());
    let containers = sb.read(&sb.containers_conf());
    let mtime = fs_err::metadata(sb.containers_conf())
        .unwrap()
        .modified()
        .unwrap();

    let second = sb.podstack(&["configure"]);
    assert!(second.ok(), "{}", second.all());
    assert!(
        second
            .stdout
            .starts_with("podstack configure: nothing to change"),
        "{}",
        second.stdout
    );
    assert_eq!(sb.read(&sb.storage_conf()), storage);
    assert_eq!(sb.read(&sb.containers_conf()), containers);
    assert_eq!(
        fs_err::metadata(sb.containers_conf())
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    let json = sb.podstack(&["configure", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    for f in report["files"].as_array().unwrap() {
        assert_eq!(f["status"], "unchanged", "{f}");
    }
    assert_eq!(
        report["canary"]["runs"], 1,
        "a run with nothing to change needs one canary"
    );
}

#[test]
fn user_comments_and_foreign_keys_survive_byte_for_byte() {
    let Some(sb) = Sandbox::rootful() else { return };
    let storage = format!(
        "# Storage for my project. Do not lose this comment.\n\n[storage]\n# the driver, chosen by hand\ndriver = \"overlay\"  # trailing note\nrunroot = \"{}\"\ngraphroot = \"{}\"\n\n[storage.options]\nmount_program = \"\"  # custom\nmy_own_key = [1, 2, 3]\n",
        sb.path("storage/run").display(),
        sb.path("storage/root").display()
    );
    let containers = format!(
        "# My containers.conf\n[containers]\n# keep my env\nenv = [\"FOO=bar\"]   # note\ntz = \"UTC\"\n\n[engine]\ntmp_dir = \"{}\"\n# who knows\nunknown_to_podstack = \"yes\"\n\n[network]\n# leave me alone\ndefault_subnet = \"10.89.0.0/16\"\n",
        sb.path("podman-tmp").display()
    );
    sb.write(&sb.storage_conf(), &storage);
    sb.write(&sb.containers_conf(), &containers);

    // A driver change rewrites that one value and not another byte.
    let r = sb.podstack(&["configure", "--no-canary", "--storage-driver", "vfs"]);
    assert!(r.ok(), "{}", r.all());
    let switched = storage.replace(
        "driver = \"overlay\"  # trailing note",
        "driver = \"vfs\"  # trailing note",
    );
    assert_ne!(switched, storage);
    assert_eq!(sb.read(&sb.storage_conf()), switched);
    assert_eq!(
        sb.read(&sb.path("config/containers/storage.conf.bak")),
        storage
    );

    let r = sb.podstack(&["configure"]);
    assert!(r.ok(), "{}", r.all());

    // storage.conf: the user's driver choice (vfs now) stays, so nothing of it changes.
    assert_eq!(sb.read(&sb.storage_conf()), switched);
    // containers.conf: every original line is still there, in order, byte for byte;
    // podstack only added lines.
    let after = sb.read(&sb.containers_conf());
    let mut added = after.lines();
    for line in containers.lines() {
        assert!(
            added.any(|l| l == line),
            "lost or reordered: {line:?}\n---\n{after}"
        );
    }
    assert!(after.contains("# podstack: "), "{after}");
    let bak = sb.read(&sb.path("config/containers/containers.conf.bak"));
    assert_eq!(bak, containers, "the .bak holds the user's original");
}

#[test]
fn dry_run_writes_nothing_and_shows_the_plan() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let before = sb.read(&sb.containers_conf());
    let r = sb.podstack(&["configure", "--dry-run", "--storage-driver", "vfs"]);
    assert!(r.ok(), "{}", r.all());
    assert!(r.stdout.contains("would change"), "{}", r.stdout);
    assert!(
        r.stdout.contains("[storage] driver = \"vfs\""),
        "{}",
        r.stdout
    );
    assert_eq!(sb.read(&sb.containers_conf()), before);
    assert!(!sb.path("config/containers/containers.conf.bak").exists());
    assert!(!sb.read(&sb.storage_conf()).contains("vfs"));
}

#[test]
fn malformed_files_are_refused_with_file_line_column_and_left_untouched() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    for (path, bad) in [
        (
            sb.storage_conf(),
            "[storage]\ndriver = \"vfs\"\ngraphroot = /var/lib/x\n",
        ),
        (
            sb.containers_conf(),
            "[engine]\nruntime = \"runc\"\n[containers\n",
        ),
    ] {
        let good = sb.read(&path);
        sb.write(&path, bad);
        let r = sb.podstack(&["configure"]);
        assert_eq!(r.code, 2, "{}", r.all());
        let j = sb.podstack(&["configure", "--json"]);
        let doc: serde_json::Value =
            serde_json::from_str(&j.stdout).unwrap_or_else(|e| panic!("{e}: {}", j.all()));
        assert!(
            doc["error"].as_str().unwrap_or("").contains("invalid TOML"),
            "{doc}"
        );
        let want = format!("{}:3:", path.display());
        assert!(r.stderr.contains(&want), "no {want} in:\n{}", r.stderr);
        assert!(
            r.stderr.contains("invalid TOML") && r.stderr.contains("untouched"),
            "{}",
            r.stderr
        );
        assert_eq!(sb.read(&path), bad, "the file was changed");
        sb.write(&path, &good);
    }
}

#[test]
fn unwritable_config_folder_is_a_clear_error() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    sb.write_stock();
    // A containers.conf the test user may read but not replace (its folder is root's).
    let locked = sb.path("locked");
    fs_err::create_dir_all(&locked).unwrap();
    fs_err::write(
        locked.join("containers.conf"),
        sb.read(&sb.containers_conf()),
    )
    .unwrap();
    let conf = locked.join("containers.conf").display().to_string();
    let r = sb.run_with(
        &sb.bin.display().to_string(),
        &["configure", "--no-canary"],
        &[("CONTAINERS_CONF", &conf)],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("cannot write {conf}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("CONTAINERS_CONF"),
        "the message names the way out:\n{}",
        r.stderr
    );
}

#[test]
fn missing_podman_names_the_install_command() {
    let sb = Sandbox::plain();
    let r = sb.run_with(
        &sb.bin.display().to_string(),
        &["configure"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("podman is not installed"), "{}", r.stderr);
    assert!(r.stderr.contains("apt-get install podman"), "{}", r.stderr);
    let d = sb.run_with(
        &sb.bin.display().to_string(),
        &["doctor"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(d.code, 1, "{}", d.all());
    assert!(d.stdout.contains("apt-get install podman"), "{}", d.stdout);
}

#[test]
fn a_driver_switch_over_used_storage_is_refused_until_reset_is_asked_for() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    // Put data in overlay storage.
    sb.import_tiny_image(TINY);
    let storage_before = sb.read(&sb.storage_conf());

    let r = sb.podstack(&["configure", "--storage-driver", "vfs"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("holds overlay data"), "{}", r.stderr);
    assert!(r.stderr.contains("--reset-storage"), "{}", r.stderr);
    assert_eq!(
        sb.read(&sb.storage_conf()),
        storage_before,
        "nothing may change"
    );

    let r = sb.podstack(&["configure", "--storage-driver", "vfs", "--reset-storage"]);
    assert!(r.ok(), "{}", r.all());
    assert!(sb.read(&sb.storage_conf()).contains("driver = \"vfs\""));
    let images = sb.podman(&["images", "--quiet"]);
    assert!(
        images.ok() && images.stdout.trim().is_empty(),
        "the store was wiped: {}",
        images.all()
    );
    let run = sb.podstack(&["doctor"]);
    assert!(run.ok(), "{}", run.all());
}

#[test]
fn concurrent_runs_serialize_and_never_duplicate_a_key() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let runs: Vec<common::Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| sb.podstack(&["configure"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert!(r.ok(), "{}", r.all());
    }
    let changed = runs
        .iter()
        .filter(|r| {
            r.stdout
                .starts_with("podstack configure: podman configured")
        })
        .count();
    assert_eq!(
        changed, 1,
        "exactly one run writes; the others find every byte right"
    );
    let conf = sb.read(&sb.containers_conf());
    for key in [
        "runtime",
        "cgroup_manager",
        "events_logger",
        "default_ulimits",
    ] {
        let n = conf
            .lines()
            .filter(|l| l.starts_with(&format!("{key} =")))
            .count();
        assert!(n <= 1, "{key} appears {n} times:\n{conf}");
    }
}

#[test]
fn a_missing_storage_conf_stays_missing_and_podman_sees_one_driver() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    sb.write_stock();
    fs_err::remove_file(sb.storage_conf()).unwrap();
    // podman's own look-up ($XDG_CONFIG_HOME/containers/storage.conf, in the sandbox):
    // the file is simply missing, and podman uses its defaults under the sandbox's XDG folders.
    let unset = [("CONTAINERS_STORAGE_CONF", "")];
    let bin = sb.bin.display().to_string();
    let conf = sb.run_with(&bin, &["configure"], &unset);
    assert!(conf.ok(), "{}", conf.all());
    assert!(
        !sb.storage_conf().exists(),
        "no storage.conf is created just to restate defaults"
    );
    // The canary ran podman with the storage configuration podman really uses, so
    // the store it created matches what podman now selects.
    let info = sb.run_with(
        "podman",
        &["info", "--format", "{{.Store.GraphDriverName}}"],
        &unset,
    );
    assert!(info.ok(), "{}", info.all());
    assert!(
        !info.stderr.contains("overwritten by graph driver") && !info.stderr.contains("mismatch"),
        "the canary proved another storage configuration:\n{}",
        info.stderr
    );
}

#[test]
fn a_storage_conf_named_by_the_environment_is_created() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    sb.write_stock();
    fs_err::remove_file(sb.storage_conf()).unwrap();
    let conf = sb.podstack(&["configure"]);
    assert!(conf.ok(), "{}", conf.all());
    assert!(
        sb.storage_conf().exists(),
        "podman refuses to start without the file CONTAINERS_STORAGE_CONF names"
    );
    assert!(sb.podstack(&["doctor"]).ok());
}

#[test]
fn a_hand_switched_driver_is_flagged_and_reset_heals_it() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let conf = sb.podstack(&["configure"]);
    assert!(conf.ok(), "{}", conf.all());
    // Overlay data (podman's default here), then the driver switched by hand.
    sb.import_tiny_image(TINY);
    let storage = sb
        .read(&sb.storage_conf())
        .replace("[storage]\n", "[storage]\ndriver = \"vfs\"\n");
    sb.write(&sb.storage_conf(), &storage);

    // podman 4.3 accepts the switch silently, then waits 20 s for conmon at every
    // container start: doctor names the mixed store (and a short deadline keeps
    // this test from waiting).
    let doctor = sb.podstack(&["doctor", "--json", "--timeout", "5"]);
    let v: serde_json::Value =
        serde_json::from_str(&doctor.stdout).unwrap_or_else(|e| panic!("{e}: {}", doctor.all()));
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("also holds overlay data"),
        "{}",
        doctor.stdout
    );

    let plain = sb.podstack(&["configure", "--no-canary"]);
    assert!(
        plain.stdout.contains("warning") && plain.stdout.contains("--reset-storage"),
        "{}",
        plain.all()
    );

    let healed = sb.podstack(&["configure", "--reset-storage"]);
    assert!(healed.ok(), "{}", healed.all());
    assert!(healed.stdout.contains("wiped"), "{}", healed.stdout);
    let doctor = sb.podstack(&["doctor", "--json"]);
    assert!(doctor.ok(), "{}", doctor.all());
    let v: serde_json::Value = serde_json::from_str(&doctor.stdout).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]), "{}", doctor.stdout);
    assert!(
        v["canary_ms"].as_u64().unwrap() < 5_000,
        "{}",
        doctor.stdout
    );
    assert!(
        sb.read(&sb.storage_conf()).contains("driver = \"vfs\""),
        "the user's choice stays"
    );
}
