//! deploy/Dockerfile, built and run on the test engine (scripts/test's). No registry is
//! reachable, so the test builds the same Dockerfile with base images of its own, as
//! scripts/test-images does: a busybox "builder" with `PREBUILT=1` (the test's `runbot` binary
//! in the context instead of a Rust toolchain) and a runtime FROM scratch with only the glibc
//! libraries `ldd runbot` names, like distroless cc. Then it runs the image as production
//! would (`--read-only`, a named volume for /var/lib/runbot) and checks: /healthz answers, the
//! image's HEALTHCHECK says healthy, the process is not root, nothing is written outside the
//! volume, and a real Alertmanager's webhook is taken (200) and stored.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::docker_host;
use common::{free_port, Alertmanager, CONSOLE_TOKEN, TOKEN};
use serde_json::Value;

fn cli() -> String {
    std::env::var("DOCKER_CLI").unwrap_or_else(|_| "/usr/bin/docker".into())
}

/// Runs the docker CLI against the test engine; panics with its stderr when it fails.
fn docker(args: &[&str]) -> String {
    let out = docker_try(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docker_try(args: &[&str]) -> Output {
    Command::new(cli())
        .args(args)
        .env("DOCKER_HOST", docker_host())
        // The classic builder: Debian's engine has no BuildKit front end that works offline.
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): install docker.io", cli()))
}

/// Everything the test made on the engine, removed when dropped, also when the test panics.
struct Made {
    container: String,
    volume: String,
    images: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", "-v", &self.container]);
        let _ = docker_try(&["volume", "rm", "-f", &self.volume]);
        for i in &self.images {
            let _ = docker_try(&["rmi", "-f", i]);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The shared libraries and loader `ldd` names for `bin`, as absolute paths.
fn libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd runs");
    assert!(out.status.success(), "ldd {}", bin.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once(" => ") {
                Some((_, rest)) => rest.split_whitespace().next().map(str::to_string),
                None => l.split_whitespace().next().map(str::to_string),
            }
        })
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Builds the two base images and then deploy/Dockerfile; returns the image's size in bytes.
fn build(made: &Made, bin: &Path, work: &Path) -> u64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (builder, runtime, image) = (&made.images[0], &made.images[1], &made.images[2]);

    // A builder with only a POSIX shell and cp/mkdir: enough for PREBUILT=1.
    let b = work.join("builder");
    std::fs::create_dir_all(b.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", b.join("bin/busybox")).expect("busybox-static is installed");
    for applet in ["sh", "cp", "mkdir"] {
        std::os::unix::fs::symlink("busybox", b.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        b.join("Dockerfile"),
        "FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", builder, b.to_str().unwrap()]);

    // A runtime like distroless cc: glibc and the loader, no shell, no package manager.
    let r = work.join("runtime");
    let mut libs_size = 0;
    for lib in libraries(bin) {
        let dest = r.join("rootfs").join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        libs_size += std::fs::copy(&lib, &dest).unwrap();
    }
    std::fs::write(r.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    docker(&["build", "-q", "-t", runtime, r.to_str().unwrap()]);

    // The context deploy/Dockerfile expects, with the prebuilt binary.
    let ctx = work.join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    let bin_size = std::fs::copy(bin, ctx.join("runbot")).unwrap();
    copy_dir(&root.join("commands"), &ctx.join("commands"));
    copy_dir(&root.join("policies"), &ctx.join("policies"));
    docker(&[
        "build",
        "-q",
        "-f",
        root.join("deploy/Dockerfile").to_str().unwrap(),
        "--build-arg",
        &format!("BUILDER={builder}"),
        "--build-arg",
        &format!("RUNTIME={runtime}"),
        "--build-arg",
        "PREBUILT=1",
        "-t",
        image,
        ctx.to_str().unwrap(),
    ]);
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", image])
        .trim()
        .parse()
        .unwrap();
    // Nothing but runbot, its libraries and the data files: no shell, no build tree.
    let data = 2 * 1024 * 1024;
    assert!(
        size <= bin_size + libs_size + data,
        "the image is {size} bytes, more than runbot ({bin_size}), its libraries ({libs_size}) and its data files"
    );
    size
}

fn inspect(container: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", container])).unwrap();
    v[0].clone()
}

async fn wait_until<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_image_runs_read_only_as_non_root_and_takes_alertmanagers_webhooks() {
    let tag = format!("rbt{}x{}", std::process::id(), free_port());
    let made = Made {
        container: format!("runbot-image-{tag}"),
        volume: format!("runbot-data-{tag}"),
        images: ["builder", "runtime", "runbot"]
            .iter()
            .map(|i| format!("runbot-test/deploy-image-{i}:{tag}"))
            .collect(),
    };
    let work = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_runbot"));
    let size = build(&made, bin, work.path());
    println!(
        "deploy/Dockerfile image (debug runbot): {size} bytes ({:.1} MB)",
        size as f64 / 1e6
    );

    // The test engine has no bridge: host network, on a port of this test's own.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    docker(&[
        "run",
        "-d",
        "--name",
        &made.container,
        "--read-only",
        "--network",
        "host",
        "-v",
        &format!("{}:/var/lib/runbot", made.volume),
        "-e",
        &format!("RUNBOT__HTTP__LISTEN=127.0.0.1:{port}"),
        "-e",
        &format!("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN={TOKEN}"),
        "-e",
        &format!("RUNBOT__CONSOLE__TOKEN={CONSOLE_TOKEN}"),
        // The image's own HEALTHCHECK, checked every second instead of every 15.
        "--health-interval=1s",
        &made.images[2],
    ]);

    let client = reqwest::Client::new();
    wait_until(30, "/healthz to answer 200", async || {
        let r = client.get(format!("{url}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let c = inspect(&made.container);
    assert_eq!(c["State"]["Running"], true, "{c}");

    // Not root: the image says so, and the kernel agrees about the running process.
    assert_eq!(c["Config"]["User"], "65532:65532");
    let pid = c["State"]["Pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uids}"
    );

    // The HEALTHCHECK (`runbot healthcheck`, there being no shell or curl) turns healthy.
    wait_until(30, "the container to be healthy", async || {
        let h = inspect(&made.container)["State"]["Health"]["Status"].clone();
        assert_ne!(h, "unhealthy", "{}", inspect(&made.container));
        (h == "healthy").then_some(())
    })
    .await;

    // A real Alertmanager posting to it, with the token.
    let am = Alertmanager::start(&format!(
        r#"
route:
  receiver: runbot
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runbot
    webhook_configs:
      - url: {url}/webhooks/alertmanager
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
"#
    ))
    .await;
    am.push(serde_json::json!([{
        "labels": {"alertname": "APIDown", "severity": "critical", "service": "api"},
        "annotations": {"summary": "api is down"},
    }]))
    .await;
    wait_until(30, "Alertmanager to deliver the webhook", async || {
        (am.metric("alertmanager_notifications_total", "webhook")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        am.metric("alertmanager_notifications_failed_total", "webhook")
            .await,
        0.0,
        "runbot answered Alertmanager's webhook with an error"
    );
    // Stored: on the volume, the only place the container can write.
    wait_until(10, "the alert group in runbot's API", async || {
        let groups: Vec<Value> = client
            .get(format!("{url}/api/alert-groups?status=all"))
            .bearer_auth(CONSOLE_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        groups
            .iter()
            .any(|g| g.to_string().contains("APIDown"))
            .then_some(())
    })
    .await;

    // Nothing written outside the volume (the root file system is read-only, and the
    // container's diff of it is empty).
    let diff = docker(&["diff", &made.container]);
    let outside: Vec<&str> = diff
        .lines()
        .filter(|l| {
            !l.split_whitespace()
                .nth(1)
                .unwrap_or("")
                .starts_with("/var/lib/runbot")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "written outside /var/lib/runbot: {outside:?}"
    );
    let logs = docker_try(&["logs", &made.container]);
    let logs =
        String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert!(
        !logs.contains("\"level\":\"ERROR\""),
        "runbot logged errors in the container:\n{logs}"
    );
}

/// deploy/systemd/runbot.service, checked by `systemd-analyze verify` where it is installed
/// (with ExecStart pointing at the test's binary, since verify checks that it exists).
#[test]
fn the_systemd_unit_verifies_and_is_locked_down() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/runbot.service"),
    )
    .unwrap();
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    for want in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "runbot"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
        ("EnvironmentFile", "-/etc/runbot/runbot.env"),
        ("ExecStart", "/usr/local/bin/runbot serve"),
    ] {
        assert!(keys.contains(&want), "the unit lacks {}={}", want.0, want.1);
    }

    let analyze =
        std::env::var("SYSTEMD_ANALYZE").unwrap_or_else(|_| "/usr/bin/systemd-analyze".into());
    if !Path::new(&analyze).exists() {
        println!("skipped systemd-analyze verify: {analyze} is not installed (systemd package)");
        return;
    }
    let verify = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.service");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(&file)
            .output()
            .unwrap();
        // verify exits 0 on values it ignores, but says so on stderr.
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let bin = env!("CARGO_BIN_EXE_runbot");
    let ours = unit.replace("/usr/local/bin/runbot", bin);
    let (ok, said) = verify(&ours);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check can fail: a value systemd ignores is reported.
    let (_, said) = verify(&ours.replace("ProtectSystem=strict", "ProtectSystem=stricter"));
    assert!(
        said.contains("ProtectSystem") || said.contains("protect system"),
        "{said}"
    );
}
